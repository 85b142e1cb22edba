"""The local copy of the `models` records (streams/registry_copy.py)."""

from __future__ import annotations

from pathlib import Path

from models.registry_log import RegistryLog
from streams.registry_copy import REGISTRY_COPY_DIR, RegistryCopy

SIG = [("persona-sig", b"\x01\x02signature")]


def test_latest_record_per_key_with_headers_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / REGISTRY_COPY_DIR
    copy = RegistryCopy(path)
    copy.put("active/churn", b'{"version": "a"}', SIG)
    copy.put("active/churn", b'{"version": "b"}', SIG)
    copy.close()
    again = RegistryCopy(path)
    [entry] = again.entries()
    assert (entry.key, entry.value, entry.headers) == ("active/churn", b'{"version": "b"}', SIG)
    again.close()


def test_a_tombstone_deletes_the_kept_record(tmp_path: Path) -> None:
    copy = RegistryCopy(tmp_path / REGISTRY_COPY_DIR)
    copy.put("experiment", b"{}")
    copy.put("experiment", None)
    copy.put("never-kept", None)
    assert copy.records() == []
    copy.close()


def test_records_come_in_the_fold_order(tmp_path: Path) -> None:
    copy = RegistryCopy(tmp_path / REGISTRY_COPY_DIR)
    keys = ("experiment", "active/recs", "version/v1", "chunk/v1/recs.npz/1/2", "chunk/v1/a/0/1")
    for key in keys:
        copy.put(key, key.encode())
    kinds = [key.split("/")[0] for key, _ in copy.records()]
    assert kinds == ["chunk", "chunk", "version", "active", "experiment"]
    copy.close()


def test_a_read_only_copy_sees_what_the_open_writer_kept(tmp_path: Path) -> None:
    path = tmp_path / REGISTRY_COPY_DIR
    writer = RegistryCopy(path)
    writer.put("active/recs", b"r", SIG)
    reader = RegistryCopy(path, read_only=True)
    assert [(e.key, e.headers) for e in reader.entries()] == [("active/recs", SIG)]
    reader.close()
    writer.put("active/churn", b"c")  # the writer is not disturbed by the reader
    assert len(writer) == 2
    writer.close()
    assert not (tmp_path / f"{REGISTRY_COPY_DIR}.secondary").exists()


def test_the_registry_fold_accepts_the_kept_records(tmp_path: Path) -> None:
    copy = RegistryCopy(tmp_path / REGISTRY_COPY_DIR)
    copy.put("active/churn", b'{"version": "unknown-but-recorded", "history": []}')
    state = RegistryLog()
    for key, value in copy.records():
        state.apply(key, value)
    assert state.active("churn") == "unknown-but-recorded"
    copy.close()
