"""Helpers shared by the model artifacts: safe JSON loading, version strings, time stamps."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import math
import os
import zipfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from math import prod
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy

from engine.text import MAX_ID, BadJson, id_problem, outside_json


class ModelLoadError(ValueError):
    """An artifact that is missing, not in the safe format, or made for another contract."""


# what np.load of a bad .npz raises: object arrays (pickles), a truncated or foreign zip, a
# missing member; a loader turns them into ModelLoadError saying why
NPZ_ERRORS = (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile)
NPY_HEADER_MAX = 10_000  # bytes of one member's .npy header (numpy's own default limit)


def check_npz(
    path: Path,
    limits: Mapping[str, int],
    lengths: Mapping[str, int] | None = None,
    mismatch: Callable[[str, int], str] | None = None,
) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each member's (shape, dtype) from its header alone, before any array is read: an .npz is a
    zip, and `np.load` allocates what a member's header declares and inflates what its zip entry
    declares. ModelLoadError unless every member is `<name>.npy` with `name` in `limits`, its
    header is a plain (non-object) dtype whose data takes at most `limits[name]` bytes, and the
    header and data fill exactly the size the zip declares (so nothing inflates past it: a zip
    bomb or a header promising terabytes is refused without allocating them).

    `lengths` names members whose length (rows: the first dimension) the metadata fixes (a
    recs table's n+1 offsets, an embedding's n vectors): one of another length is refused
    first with `mismatch(name, found)`, the metadata and the arrays no longer being of one
    artifact (a hand-edited items list), before any limit derived from that metadata speaks
    of bytes."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename.removesuffix(".npy")
                if lengths and mismatch and name in lengths and info.filename.endswith(".npy"):
                    shape = _npy_header(path, zf, info)[0]
                    if shape and shape[0] != lengths[name]:
                        raise ModelLoadError(mismatch(name, shape[0]))
            for info in zf.infolist():
                name = info.filename.removesuffix(".npy")
                if not info.filename.endswith(".npy") or name not in limits:
                    raise ModelLoadError(
                        f"{path}: holds only the arrays {', '.join(limits)}, not {info.filename!r}"
                    )
                out[name] = _npy_member(path, zf, info, limits[name])
    except (FileNotFoundError, ModelLoadError):
        raise
    except (*NPZ_ERRORS, RuntimeError, NotImplementedError) as exc:
        raise ModelLoadError(f"{path} is not a valid .npz: {exc}") from None
    return out


def _npy_member(
    path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int
) -> tuple[tuple[int, ...], str]:
    """(shape, dtype) of the .npy member `info` from its header alone (`check_npz`), or
    ModelLoadError: format 1.0 or 2.0, no objects, at most `limit` bytes of data, and header
    plus data exactly the size the zip declares."""
    name = info.filename.removesuffix(".npy")
    shape, dtype, header = _npy_header(path, zf, info)
    if dtype.hasobject:
        raise ModelLoadError(f"{path}: {name} holds objects (pickles are refused)")
    size = prod(shape) * dtype.itemsize
    if size > limit:
        raise ModelLoadError(
            f"{path}: {name} declares {size:,} bytes, more than the {limit:,} its metadata allows"
        )
    if header + size != info.file_size:
        raise ModelLoadError(
            f"{path}: {name} declares {size:,} bytes of data in an entry of "
            f"{info.file_size - header:,}"
        )
    return tuple(shape), dtype.str


def _npy_header(
    path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo
) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """(shape, dtype, header length) of the .npy member `info`, from its header alone."""
    with zf.open(info) as fp:
        version = npy.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = npy.read_array_header_1_0(fp, NPY_HEADER_MAX)
        elif version == (2, 0):
            shape, _, dtype = npy.read_array_header_2_0(fp, NPY_HEADER_MAX)
        else:
            name = info.filename.removesuffix(".npy")
            raise ModelLoadError(f"{path}: {name} is .npy format {version}")
        return tuple(shape), np.dtype(dtype), fp.tell()


def check_zip_members(path: Path, limit: int, what: str) -> None:
    """A zip of arrays read by another library (a `.skops` file) checked before that library
    inflates it: its members inflate to at most `limit` bytes in all (the sizes the zip declares,
    which reading enforces), and each `.npy` member passes `_npy_member` (np.load would
    allocate what its header declares). ModelLoadError saying why not (`what` names the format
    for a file that is no zip)."""
    try:
        if path.stat().st_size > limit:
            raise ModelLoadError(f"{path} is larger than {limit:,} bytes")
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            inflated = sum(info.file_size for info in members)
            if inflated > limit:
                raise ModelLoadError(
                    f"{path}: its members inflate to {inflated:,} bytes, more than {limit:,}"
                )
            for info in members:
                if info.filename.endswith(".npy"):
                    _npy_member(path, zf, info, limit)
    except (FileNotFoundError, ModelLoadError):
        raise
    except (*NPZ_ERRORS, RuntimeError, NotImplementedError) as exc:
        raise ModelLoadError(f"{path} is not a {what}: {exc}") from None


def check_item_ids(items: Any, where: str, numbers: bool = False) -> list[str]:
    """A recs artifact's `items` as a list of distinct ids that an event could name: 1..128
    characters (engine.text.MAX_ID) without control characters or lone surrogates (id_problem), or
    ModelLoadError saying why not. Any other id never matches a user's history and reaches every
    user through the popular fill (a 10 MB id, a NUL or a terminal escape in each answer).
    `numbers`: integers are accepted too (ids written as numbers elsewhere), as their text."""
    if not isinstance(items, list):
        raise ModelLoadError(f"{where}: items must be a list of item ids")
    ids: list[str] = items
    if not all(type(i) is str for i in items):
        accepted = (str, int) if numbers else (str,)
        bad = next((i for i in items if type(i) not in accepted), items[0])
        if type(bad) not in accepted:
            kinds = "strings or integers" if numbers else "strings"
            raise ModelLoadError(f"{where}: item ids must be {kinds}, not {type(bad).__name__}")
        ids = [str(i) for i in items]
    if ids and not 1 <= min(map(len, ids)) <= max(map(len, ids)) <= MAX_ID:
        raise ModelLoadError(f"{where}: every item id must be 1..{MAX_ID} characters")
    problem = id_problem("".join(ids))  # one scan of them all
    if problem:
        raise ModelLoadError(f"{where}: an item id {problem}")
    if len(set(ids)) != len(ids):
        raise ModelLoadError(f"{where}: item ids must be unique")
    return ids


MAX_METRICS_DEPTH = 8
MAX_METRICS_ITEMS = 1000  # entries of one object or list of metrics
MAX_METRIC_TEXT = 1000  # characters of one string


def json_metrics(value: Any, depth: int = 0) -> Any:
    """Metrics from an artifact as JSON values (what GET /v1/models answers): NaN and infinities
    (Python's json reads them) become None, and so does what nests deeper than
    MAX_METRICS_DEPTH; objects and lists keep their first MAX_METRICS_ITEMS entries, strings
    their first MAX_METRIC_TEXT characters."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value[:MAX_METRIC_TEXT]
    if depth >= MAX_METRICS_DEPTH:
        return None
    if isinstance(value, Mapping):
        pairs = list(value.items())[:MAX_METRICS_ITEMS]
        return {str(k)[:MAX_METRIC_TEXT]: json_metrics(v, depth + 1) for k, v in pairs}
    if isinstance(value, list | tuple):
        return [json_metrics(v, depth + 1) for v in value[:MAX_METRICS_ITEMS]]
    return str(value)[:MAX_METRIC_TEXT]


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def make_version(name: str, when: datetime, content: bytes) -> str:
    """`churn-20261122T0800-1a2b3c4d`: the name, the UTC training minute and a digest of the
    model's content."""
    digest = hashlib.sha256(content).hexdigest()[:8]
    return f"{name}-{when.astimezone(UTC):%Y%m%dT%H%M}-{digest}"


# Bytes of an artifact's JSON file (recs.json, churn.json): its metadata, the item ids (~130 MB
# for 1M ids of the longest kind) and a linear model's numbers. A JSON text is parsed whole into
# Python objects several times its size; without this bound only the registry's 4 GiB per file
# (MAX_CHUNKS) limited what a load could take.
MAX_JSON_BYTES = 256 * 1024 * 1024


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from `path`, or ModelLoadError saying why not (never unpickles anything;
    nothing over MAX_JSON_BYTES is read)."""
    try:
        with path.open("rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_JSON_BYTES:  # (read(n) allocates n bytes)
                raise ModelLoadError(
                    f"{path}: a JSON {what} artifact is at most {MAX_JSON_BYTES} bytes"
                )
            raw = f.read()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {what} artifact {path}: {exc}") from None
    try:
        data = outside_json(raw)
    except BadJson as exc:  # also nesting past the stack, a number of more than 4300 digits
        raise ModelLoadError(
            f"{path} is not a JSON {what} artifact (pickles and other formats are refused): {exc}"
        ) from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: a {what} artifact must be a JSON object")
    return data


def json_object(data: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    """`data[name]` as an object (absent, null or empty: {}), or ModelLoadError saying it must be
    one: `dict()` of a list or a string raised TypeError or ValueError out of the loader, which
    the registry (`streams.registry`, catching ModelLoadError) and `persona models` did not
    expect."""
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path}: {name} must be a JSON object, not {type(value).__name__}")
    return dict(value)


def read_feature_names(data: dict[str, Any], path: Path) -> tuple[str, ...]:
    """A churn artifact's `feature_names`, a list (of names: `churn.columns_of` checks them), or
    ModelLoadError (`tuple(5)` raised TypeError out of the loader)."""
    value = data.get("feature_names")
    if not isinstance(value, list):
        raise ModelLoadError(f"{path}: feature_names must be a list of feature names")
    return tuple(value)


def require(data: dict[str, Any], path: Path, *names: str) -> None:
    missing = [n for n in names if n not in data]
    if missing:
        raise ModelLoadError(f"{path}: artifact lacks {', '.join(missing)}")


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_heap() -> bool:
    """Give the heap that a load freed back to the system (glibc's `malloc_trim`; False where
    there is none). A large model's load frees tens of MB of temporaries (the JSON text, index
    arrays under glibc's mmap threshold) that the heap would otherwise keep in the process's RSS:
    ~28 MB of an embedding model at 1M items (docs/benchmarks.md, 2026-12-04)."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
