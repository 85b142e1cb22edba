"""An erased user's audit records are pseudonymized (engine/audit.py): `pseudonymized` rewrites
one record, `erase_from_audit` the audit log and its rotations, leaving every other record and
every file that does not name the user byte for byte as it was."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from engine.audit import AuditPseudonyms, erase_from_audit, pseudonymized, record

SECRET = "a-cluster-secret-of-enough-length-000"
USER = "gone-ü"  # escaped in the JSON lines (ensure_ascii)


def test_the_pseudonym_is_keyed_by_the_cluster_secret() -> None:
    ours, theirs = AuditPseudonyms(SECRET), AuditPseudonyms(SECRET + "x")
    assert ours.of(USER) == AuditPseudonyms(SECRET).of(USER)  # matched by who knows both
    assert ours.of(USER) != theirs.of(USER) and ours.of(USER) != ours.of("kept")
    assert USER not in ours.of(USER) and len(ours.of(USER)) == 64


def test_a_record_loses_the_id_in_user_id_path_and_exact_fields_only() -> None:
    ids = {USER: "p" * 64}
    entry = {
        "action": "export",
        "user_id": USER,
        "path": f"/v1/users/{USER}/export",
        "into": USER,
        "event_id": f"{USER}-1",  # the shop's own id, made of the user id: not recognisable
        "found": True,
    }
    assert pseudonymized(entry, ids) == {
        "action": "export",
        "user_id_hmac": "p" * 64,
        "path": "/v1/users/{user_id}/export",
        "into": "p" * 64,
        "event_id": f"{USER}-1",
        "found": True,
    }
    denied = {"action": "denied", "path": f"/v1/users/{USER}/profile", "status": 401}
    assert pseudonymized(denied, ids)["user_id_hmac"] == "p" * 64
    other = {"action": "export", "user_id": "kept", "path": "/v1/users/kept/export"}
    assert pseudonymized(other, ids) == other


def _line(action: str, user: str) -> str:
    return record(action, "admin", "ok", now=0, user_id=user, path=f"/v1/users/{user}/export")


def test_the_log_and_its_rotations_are_rewritten_and_nothing_else(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    kept = _line("export", "kept") + "\n"
    log.write_text(kept + _line("erase", USER) + "\n" + "not json " + json.dumps(USER) + "\n")
    (tmp_path / "audit.log.1").write_text(kept)
    (tmp_path / "audit.log.3").write_text(_line("export", USER) + "\n" + kept)
    (tmp_path / "audit.log.10").write_text(_line("export", USER) + "\n")  # beyond KEEP: not ours
    untouched = (tmp_path / "audit.log.1").stat().st_mtime_ns
    pseudonym = AuditPseudonyms(SECRET).of(USER)

    assert erase_from_audit(log, {USER: pseudonym}) == 2

    escaped = json.dumps(USER)[1:-1]
    lines = log.read_text().splitlines()
    assert lines[0] == kept.strip() and lines[2].startswith("not json")
    erased = json.loads(lines[1])
    assert erased["user_id_hmac"] == pseudonym and "user_id" not in erased
    assert erased["path"] == "/v1/users/{user_id}/export"
    assert escaped not in (tmp_path / "audit.log.3").read_text()
    assert (tmp_path / "audit.log.3").read_text().endswith(kept)
    assert (tmp_path / "audit.log.1").stat().st_mtime_ns == untouched
    assert escaped in (tmp_path / "audit.log.10").read_text()
    assert os.stat(log).st_mode & 0o777 == 0o600 and not list(tmp_path.glob("*.erasing"))
    assert erase_from_audit(log, {USER: pseudonym}) == 0  # nothing names the user any more


def test_no_audit_log_yet(tmp_path: Path) -> None:
    assert erase_from_audit(tmp_path / "audit.log", {USER: "p"}) == 0
    assert erase_from_audit(tmp_path / "audit.log", {}) == 0


def test_an_id_with_slashes_leaves_no_trace_in_the_path() -> None:
    """An id may hold '/' (engine/text.py id_problem allows it): the request path, decoded
    (`/v1/users/a%2Fb/export` is `/v1/users/a/b/export`), kept it in clear, segment by segment."""
    ids = {"shop/42/anna": "p" * 64}
    entry = {"user_id": "shop/42/anna", "path": "/v1/users/shop/42/anna/export"}
    assert pseudonymized(entry, ids) == {
        "user_id_hmac": "p" * 64,
        "path": "/v1/users/{user_id}/export",
    }
    denied = {"action": "denied", "path": "/v1/users/shop/42/anna", "status": 401}
    assert pseudonymized(denied, ids) == {
        "action": "denied",
        "path": "/v1/users/{user_id}",
        "status": 401,
        "user_id_hmac": "p" * 64,
    }


def test_a_symlinked_audit_log_is_rewritten_where_it_points(tmp_path: Path) -> None:
    """An operator may link audit.log to a log volume (the writer follows the link): the rewrite
    replaced the link by a new file, leaving the user's records in clear in the file linked to
    and the next records away from it."""
    (tmp_path / "data").mkdir()
    (tmp_path / "logs").mkdir()
    target = tmp_path / "logs" / "persona-audit.log"
    target.write_text(_line("export", USER) + "\n" + _line("export", "kept") + "\n")
    target.chmod(0o600)
    log = tmp_path / "data" / "audit.log"
    log.symlink_to(target)

    assert erase_from_audit(log, {USER: AuditPseudonyms(SECRET).of(USER)}) == 1

    assert log.is_symlink() and log.resolve() == target
    assert json.dumps(USER)[1:-1] not in target.read_text()
    assert "kept" in target.read_text() and os.stat(target).st_mode & 0o777 == 0o600


def test_many_erasures_at_once_cost_one_pass_over_the_log(tmp_path: Path) -> None:
    """A batch folding a thousand erasures (a shop purging old accounts) searched every line for
    every id, under the lock every audit writer waits for: 1,000 ids took about 14 s per 8 MiB
    file (up to 10 files), stalling every reader's requests. One pass now, whatever the count."""
    log = tmp_path / "audit.log"
    log.write_text("".join(_line("export", f"user-{n}") + "\n" for n in range(20_000)))
    ids = {f"user-{n * 20}": f"p{n}" for n in range(1_000)}
    ids |= {f"absent-{n}": "q" for n in range(7_000)}  # one search per id: ~35 s

    started = time.perf_counter()
    assert erase_from_audit(log, ids) == 1
    took = time.perf_counter() - started

    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(entries) == 20_000
    for n, entry in enumerate(entries):
        if n % 20 == 0:
            assert entry["user_id_hmac"] == f"p{n // 20}" and "user_id" not in entry
            assert entry["path"] == "/v1/users/{user_id}/export"
        else:
            assert entry["user_id"] == f"user-{n}" and "user_id_hmac" not in entry
    # a guard against a search per id (a margin of ~30x either way), not a speed target
    assert took < 15.0, f"{took:.1f} s for 8,000 ids on {log.stat().st_size >> 20} MiB"


def test_a_line_nested_too_deeply_to_read_stays_and_the_rest_is_rewritten(tmp_path: Path) -> None:
    """A damaged line naming the user, nested deeper than the JSON reader goes, raised
    RecursionError out of the rewrite, which the worker (catching OSError) did not survive."""
    log = tmp_path / "audit.log"
    deep = '{"user_id": ' + json.dumps(USER) + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    log.write_text(deep + "\n" + _line("export", USER) + "\n")

    assert erase_from_audit(log, {USER: "p" * 64}) == 1

    first, second = log.read_text().splitlines()
    assert first == deep and json.loads(second)["user_id_hmac"] == "p" * 64
