"""A process's stats snapshot, as every worker and reader publishes it for the others' dashboards
(issue 18 item 7). Pure: the shape, its bounds and the check of a snapshot read from the topic.

Each process (worker or reader, on any machine) publishes a small JSON object of cumulative
figures (streams/stats_board.py); any process's `/v1/stats` merges the newest snapshot of every
live process with its own figures (api/fleet.py). The topic is written by Persona's processes
only, and its records are signed, but a snapshot is checked like any outside input before a page
shows it: known fields only, finite non-negative numbers, bounded maps and texts.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import urlsplit

MAX_SNAPSHOT = 64 * 1024  # bytes of one snapshot
MAX_ENTRIES = 200  # entries of one map (topics, counters, triggers, variants, models)
MAX_TEXT = 200  # characters of one text or map key
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"})
KINDS = frozenset({"worker", "reader"})
COUNTS = ("hits", "misses", "requests", "blocks", "fallbacks")
STREAM_MAPS = ("counters", "consumed", "lag", "triggers", "triggers_stale")


class BadSnapshot(ValueError):
    """A snapshot that does not have the shape `clean` checks; the message says where."""


def decode(raw: bytes | None) -> dict[str, Any]:
    """A snapshot record's value, checked (`clean`); raises BadSnapshot."""
    if raw is None or len(raw) > MAX_SNAPSHOT:
        raise BadSnapshot(f"a snapshot is a JSON object of at most {MAX_SNAPSHOT} bytes")
    try:
        data = json.loads(raw)
    except ValueError:
        raise BadSnapshot("not JSON") from None
    return clean(data)


def clean(data: Any) -> dict[str, Any]:
    """The snapshot `data` with known fields only, each of its type and within bounds."""
    if not isinstance(data, dict):
        raise BadSnapshot("not an object")
    kind = _text(data.get("kind"), "kind")
    if kind not in KINDS:
        raise BadSnapshot(f"kind must be one of {sorted(KINDS)}")
    stream = data.get("stream") or {}
    if not isinstance(stream, dict):
        raise BadSnapshot("stream must be an object")
    churn = data.get("churn") or {}
    if not isinstance(churn, dict):
        raise BadSnapshot("churn must be an object")
    return {
        "process": _text(data.get("process"), "process"),
        # how a page names the process (`process_label`); "" from a process that predates it
        "label": _text(data.get("label", ""), "label"),
        "kind": kind,
        "host": _text(data.get("host", ""), "host"),
        "t": _number(data.get("t"), "t"),
        "started": _number(data.get("started"), "started"),
        "ready": data.get("ready") is True,
        "ready_detail": _text(data.get("ready_detail", ""), "ready_detail"),
        "models": _texts(data.get("models", {}), "models"),
        "stream": {name: _numbers(stream.get(name, {}), name) for name in STREAM_MAPS},
        **{name: _number(data.get(name, 0), name) for name in COUNTS},
        "latency": _list(data.get("latency", []), "latency"),
        "variants": {k: _list(v, k)[:2] for k, v in _map(data.get("variants", {})).items()},
        "clicks": _numbers(data.get("clicks", {}), "clicks"),  # "block:variant" -> clicks
        "churn": {
            "counts": _list(churn.get("counts", []), "churn"),
            "sampled": _number(churn.get("sampled", 0), "sampled"),
            "sum": _number(churn.get("sum", 0), "sum"),
        },
    }


def process_label(kind: str, url: str, pid: int, index: int | None = None) -> str:
    """How the dashboard names a process: "reader 1 (pid 15995) on :8080", "worker (pid 412)
    on shop-2:8080". Its id on the stats board ("reader:http://127.0.0.1:8080:1:15995": kind,
    URL, reader number, pid) read as a second port. `url`: the URL it serves on (the port alone
    for this machine's addresses: the dashboard's host column names the machine)."""
    name = kind if index is None else f"{kind} {index}"
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:  # no URL a setting should give: named as given
        host, port = url, None
    where = f"{'' if host in LOOPBACK else host}:{port}" if port is not None else host
    label = f"{name} (pid {pid})" + (f" on {where}" if where else "")
    return label[:MAX_TEXT]  # `clean` refuses a longer text: the snapshot would be dropped


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise BadSnapshot(f"{where} must be a text of at most {MAX_TEXT} characters")
    return value


def _number(value: Any, where: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise BadSnapshot(f"{where} must be a finite number >= 0")
    return float(value)


def _map(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or len(value) > MAX_ENTRIES:
        raise BadSnapshot(f"a map must be an object of at most {MAX_ENTRIES} entries")
    for key in value:
        _text(key, "a map key")
    return value


def _numbers(value: Any, where: str) -> dict[str, float]:
    return {k: _number(v, f"{where}.{k}") for k, v in _map(value).items()}


def _texts(value: Any, where: str) -> dict[str, str]:
    return {k: _text(v, f"{where}.{k}") for k, v in _map(value).items()}


def _list(value: Any, where: str) -> list[float]:
    if not isinstance(value, list) or len(value) > MAX_ENTRIES:
        raise BadSnapshot(f"{where} must be a list of at most {MAX_ENTRIES} numbers")
    return [_number(v, where) for v in value]
