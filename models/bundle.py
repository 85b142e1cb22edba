"""One model version as a directory of safe files, and the loader that dispatches on its kind.

| name  | kind                  | files                      |
|-------|-----------------------|----------------------------|
| churn | `logistic_regression` | `churn.json`               |
| churn | `sklearn`             | `churn.json`, `churn.skops`|
| recs  | `item_knn`            | `recs.json`, `recs.npz`    |
| recs  | `embedding`           | `recs.json`, `recs.npz`    |

Nothing else is accepted: other files (a `.pkl`, a `.joblib`) are refused with a message, and no
loader ever unpickles (`.npz` is read with `allow_pickle=False`, `.skops` with a trusted-type list).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.artifacts import (
    MAX_JSON_BYTES,
    ModelLoadError,
    make_version,
    read_json,
    release_heap,
    rfc3339,
    utc_now,
)
from models.churn import ChurnModel
from models.contract import ChurnScorer, RecsScorer
from models.embedding import EmbeddingRecommender
from models.recs import Recommender
from models.sklearn_churn import SklearnChurnModel

NAMES = ("churn", "recs")
KINDS: dict[str, dict[str, tuple[str, ...]]] = {
    "churn": {"logistic_regression": ("churn.json",), "sklearn": ("churn.json", "churn.skops")},
    "recs": {"item_knn": ("recs.json", "recs.npz"), "embedding": ("recs.json", "recs.npz")},
}
META = {"churn": "churn.json", "recs": "recs.json"}
# A version names a folder of the artifact cache and keys of the `models` topic: no separators,
# no "." or "..", no newline, bounded (models/registry_log.py refuses other records).
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_CREATED = 64  # characters of `created` (RFC 3339 takes 20 to 35)


@dataclass(frozen=True)
class Bundle:
    """A validated model version ready to publish: its files and its metadata."""

    name: str
    kind: str
    version: str
    created: str
    metrics: dict[str, Any]
    files: dict[str, bytes]

    def digest(self, file: str) -> str:
        return hashlib.sha256(self.files[file]).hexdigest()


def detect(directory: Path) -> tuple[str, str]:
    """(name, kind) of the artifact in `directory`, or ModelLoadError."""
    if not directory.is_dir():
        raise ModelLoadError(f"{directory} is not a directory holding a model artifact")
    found = [n for n in NAMES if (directory / META[n]).is_file()]
    if len(found) != 1:
        raise ModelLoadError(
            f"{directory} must hold exactly one of churn.json or recs.json (one model per version)"
        )
    name = found[0]
    meta = read_json(directory / META[name], name)
    kind = str(meta.get("kind") or ("logistic_regression" if name == "churn" else "item_knn"))
    if kind not in KINDS[name]:
        raise ModelLoadError(
            f"{directory / META[name]}: unknown {name} kind {kind!r} "
            f"(accepted: {', '.join(KINDS[name])})"
        )
    return name, kind


def load_model(directory: str | Path) -> ChurnScorer | RecsScorer:
    """The model in `directory` (see the table above)."""
    d = Path(directory)
    name, kind = detect(d)
    if name == "recs":
        model = EmbeddingRecommender.load(d) if kind == "embedding" else Recommender.load(d)
        release_heap()  # the load's temporaries (JSON text, index arrays), tens of MB at 1M items
        return model
    if kind == "sklearn":
        return SklearnChurnModel.load(d)
    return ChurnModel.load(d / META[name])


def load_churn(directory: str | Path) -> ChurnScorer:
    model = load_model(directory)
    if model.name != "churn":
        raise ModelLoadError(f"{directory} holds a {model.name} model, not churn")
    return model  # type: ignore[return-value]


def load_recs(directory: str | Path) -> RecsScorer:
    model = load_model(directory)
    if model.name != "recs":
        raise ModelLoadError(f"{directory} holds a {model.name} model, not recs")
    return model  # type: ignore[return-value]


def read_bundle(directory: str | Path) -> Bundle:
    """Validate an artifact directory (trained here or elsewhere) and read it for publishing.

    A missing `version`/`created` is filled in (the version's digest covers every file), and the
    whole artifact is test-loaded so a broken one never reaches the registry."""
    d = Path(directory)
    name, kind = detect(d)
    allowed = KINDS[name][kind]
    extra = sorted(p.name for p in d.iterdir() if p.is_file() and p.name not in allowed)
    if extra:
        raise ModelLoadError(
            f"{d} holds {', '.join(extra)}: a {name} artifact of kind {kind} holds only "
            f"{', '.join(allowed)} (pickle/joblib files are never loaded; save scikit-learn "
            "estimators with skops, tables as .npz)"
        )
    for f in allowed:
        if (d / f).is_symlink():
            raise ModelLoadError(
                f"{d / f} is a symbolic link; an artifact's files are read only as regular files "
                "of its directory"
            )
    meta_file = d / META[name]
    if meta_file.is_file() and meta_file.stat().st_size > MAX_JSON_BYTES:  # parsed whole below
        raise ModelLoadError(f"{meta_file}: a JSON artifact is at most {MAX_JSON_BYTES} bytes")
    files = {f: (d / f).read_bytes() for f in allowed if (d / f).is_file()}
    missing = [f for f in allowed if f not in files]
    if missing:
        raise ModelLoadError(f"{d}: artifact lacks {', '.join(missing)}")
    meta = json.loads(files[META[name]])
    if not meta.get("version") or not meta.get("created"):
        when = utc_now()
        meta.setdefault("created", rfc3339(when))
        content = b"".join(files[f] for f in allowed if f != META[name])
        content += json.dumps({k: v for k, v in meta.items() if k != "version"}).encode()
        meta["version"] = make_version(name, when, content)
        meta.setdefault("format", 1)
        meta.setdefault("name", name)
        files[META[name]] = (json.dumps(meta, indent=1) + "\n").encode()
    if not str(meta["version"]).startswith(f"{name}-"):
        raise ModelLoadError(f"{d}: a {name} version must start with '{name}-'")
    if not isinstance(meta["version"], str) or not VERSION.fullmatch(meta["version"]):
        raise ModelLoadError(
            f"{d}: a version is at most 128 letters, digits, '.', '_' and '-' (it names a folder "
            "of every worker's artifact cache)"
        )
    created = meta["created"]
    if not isinstance(created, str) or len(created) > MAX_CREATED or not created.isprintable():
        raise ModelLoadError(f"{d}: created must be an RFC 3339 time, not {str(created)[:40]!r}")
    with tempfile.TemporaryDirectory() as tmp:
        write_files(Path(tmp), files)
        try:
            model = load_model(tmp)
        except ModelLoadError as exc:  # the loader names the copy: say the user's directory
            raise ModelLoadError(str(exc).replace(tmp, str(d))) from None
    return Bundle(name, kind, model.version, model.created, dict(model.metrics), files)


def write_files(directory: Path, files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for file, data in files.items():
        if "/" in file or file.startswith("."):
            raise ModelLoadError(f"bad artifact file name {file!r}")
        (directory / file).write_bytes(data)


def artifact_files(name: str) -> frozenset[str]:
    """Every file an artifact of model `name` may hold, whatever its kind."""
    return frozenset(f for files in KINDS[name].values() for f in files)


def check_out(directory: str | Path, name: str) -> None:
    """Whether `save_model` may write model `name`'s artifact into `directory`: OSError when a
    path through a file or a folder that cannot be written stands in the way, ValueError when
    the folder holds anything but an earlier artifact's files (never removed)."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(d))
    if d.is_dir():
        others = sorted(p.name for p in d.iterdir() if p.name not in artifact_files(name))
        if others:
            shown = ", ".join(others[:5]) + (
                f" and {len(others) - 5} more" if len(others) > 5 else ""
            )
            raise ValueError(
                f"{d} holds {shown}: not overwritten (a {name} artifact folder holds only "
                f"{', '.join(sorted(artifact_files(name)))}); choose another --out"
            )
    check_writable(d)


def check_writable(directory: str | Path) -> None:
    """OSError when `directory` cannot be made or written: it, or its nearest existing
    ancestor, is a file or a folder this process may not write; ValueError saying so when
    that folder takes no new folder all the same (tried: /proc, a read-only file system, where
    root's `os.access` says yes and the mkdir said "No such file or directory" after training)."""
    base = Path(directory).absolute()
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(base))
    if not os.access(base, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "Permission denied", str(base))
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".persona-out-", dir=base))
    except OSError as exc:
        raise ValueError(
            f"cannot write {directory}: no folder can be made in {base} "
            f"({exc.strerror or exc}); choose another --out"
        ) from None


def save_model(model: Any, directory: str | Path) -> Path:
    """Write a trained model's artifact into `directory`, new or holding an earlier artifact of
    the same model (its files are replaced; anything else there is refused, never removed)."""
    d = Path(directory)
    name = str(model.name)
    check_out(d, name)
    for file in artifact_files(name):
        (d / file).unlink(missing_ok=True)
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(model, ChurnModel):
        model.save(d / META["churn"])
    else:
        model.save(d)
    return d
