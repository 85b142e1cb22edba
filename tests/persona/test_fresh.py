"""What `persona run --fresh` removes and keeps, and when `--demo` loads the demo data again."""

from __future__ import annotations

from pathlib import Path

from persona.supervisor import _demo_kept
from streams.adopt import DEMO_MARK, start_fresh
from streams.readers import table_dir
from streams.registry_copy import REGISTRY_COPY_DIR, RegistryCopy

KEPT = ("local-api-key", "cluster-secret", "audit.log", "state-format.json")


def _kept_state(data: Path) -> None:
    (table_dir(data) / "profiles-0.db").mkdir(parents=True)
    (table_dir(data) / "profiles-0.db" / "CURRENT").write_text("x")
    RegistryCopy(data / REGISTRY_COPY_DIR).close()
    (data / "models" / "v1").mkdir(parents=True)
    for name in (*KEPT, DEMO_MARK):
        (data / name).write_text(name)


def test_fresh_removes_the_state_and_keeps_keys_secrets_and_the_audit_log(tmp_path: Path) -> None:
    _kept_state(tmp_path)
    assert sorted(start_fresh(tmp_path)) == sorted(["faust", REGISTRY_COPY_DIR, "models"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(KEPT)
    assert all((tmp_path / name).read_text() == name for name in KEPT)
    assert start_fresh(tmp_path) == []  # nothing left to remove


def test_the_demo_is_loaded_once_per_data_dir(tmp_path: Path) -> None:
    assert not _demo_kept(tmp_path)  # a new data dir: load it
    _kept_state(tmp_path)
    assert _demo_kept(tmp_path)  # loaded before, its state kept: not again
    (tmp_path / DEMO_MARK).unlink()
    assert not _demo_kept(tmp_path)  # state, but the load never finished: load it
    (tmp_path / DEMO_MARK).touch()
    start_fresh(tmp_path)
    assert not _demo_kept(tmp_path)  # --fresh: load it again


def test_the_local_key_is_said_created_only_when_this_start_created_it(tmp_path: Path) -> None:
    """Every start without configured keys printed "created a local key", also when it used the
    one an earlier start made (the same secret)."""
    from persona.supervisor import local_key

    path, line, said = local_key(tmp_path / "data")
    assert "created a local key" in said and str(path) in said
    again, same, said = local_key(tmp_path / "data")
    assert (again, same) == (path, line)
    assert "using the local key" in said and "created" not in said
