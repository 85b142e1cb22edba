"""No plaintext secret anywhere (issue 15 item 5), against a running `persona run` (embedded
broker, worker, one reader) started with known API keys and a webhook secret: after valid calls
with every key, failed authentications with near-misses of the real secrets (Bearer, HTTP Basic,
on the UI pages, on the reader and on the worker), refused scopes, bad bodies and runs with bad
settings, no secret (nor a near-miss, nor its Basic encoding) is in any file of the data dir,
the process output, `/metrics`, the audit log or any answer. The same run shows the files' modes
and the audit records of item 6 (refusals, export, erasure, consent at the edge and in the
fold)."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streams.broker import free_port
from tests.conftest import ROOT, http, wait_until
from tests.persona.test_run import _running

pytestmark = pytest.mark.integration

ADMIN = "adm1n-Secret-" + "Q7vX" * 6  # every scope
READER = "r3ader-Secret-" + "Lm9P" * 6  # content:read
SHOP = "sh0p-Secret-" + "Zk2W" * 6  # events:write
WEBHOOK = "w3bhook-Secret-" + "Hy4R" * 6
ALL_SCOPES = "content:read,events:write,feeds:read,models:admin,privacy:admin"
KEYS = f"admin:{ADMIN}:{ALL_SCOPES};esp:{READER}:content:read;shop:{SHOP}:events:write"
SECRETS = (ADMIN, READER, SHOP, WEBHOOK)
SHORT_CLUSTER = "cluster-secret-too-short-26"  # a PERSONA_CLUSTER_SECRET that is refused


def _near_misses(secret: str) -> list[str]:
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    return [secret[:-1], secret + "x", flipped, secret.upper(), secret[1:], " " + secret + "z"]


def _forms(secret: str) -> list[bytes]:
    """How a secret could show: as is, and Base64 as HTTP Basic sends it."""
    basic = base64.b64encode(f"user:{secret}".encode())
    return [secret.encode(), basic, base64.b64encode(secret.encode())]


@dataclass
class Run:
    proc: subprocess.Popen[str]
    base: str
    worker: str
    data_dir: Path
    log: Path
    answers: list[bytes] = field(default_factory=list)

    def call(
        self,
        method: str,
        path: str,
        key: str | None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        base: str | None = None,
    ) -> tuple[int, bytes]:
        status, got, data = http(
            method, (base or self.base) + path, body, key=key, headers=headers, timeout=30
        )
        self.answers.append(json.dumps(got).encode() + data)
        return status, data


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("secrets")
    log, data = tmp / "run.log", tmp / "data"
    env = {
        "PERSONA_API_KEYS": KEYS,
        "PERSONA_READERS": "1",
        "PERSONA_WEBHOOK_URLS": f"http://127.0.0.1:{free_port()}/hook",  # nobody listens
        "PERSONA_WEBHOOK_SECRET": WEBHOOK,
        "PERSONA_LOG_LEVEL": "debug",  # the most the processes ever say
    }
    with _running(data, log, env, grace=30) as running:
        yield Run(running.proc, running.base, running.worker, data, log)


def _event(user: str, n: int, kind: str = "add_to_cart", **fields: Any) -> dict[str, Any]:
    event = {"event_id": f"{user}-{n}", "type": kind, "user_id": user,
             "ts": int(time.time() * 1000), "item_id": "85123A", **fields}  # fmt: skip
    return event


def _exercise(run: Run) -> None:
    """Valid calls with every key, then every kind of refusal and bad input, on both ports."""
    consent = _event("alice", 2, "consent", source="banner", props={"email": False, "ads": True})
    del consent["item_id"]
    status, _ = run.call("POST", "/v1/events", SHOP, [_event("alice", 1), consent])
    assert status == 202
    wait_until(lambda: run.call("GET", "/v1/users/alice/profile", READER)[0] == 200, 60)
    assert run.call("GET", "/v1/users/alice/blocks/recommendations", READER)[0] == 200
    assert run.call("GET", "/v1/users/alice/export", ADMIN)[0] == 200
    assert run.call("POST", "/v1/render", READER, {"template": "{{ user.user_id }}",
                                                   "user_ids": ["alice"]})[0] == 200  # fmt: skip
    assert run.call("GET", "/v1/models", ADMIN)[0] == 200
    basic = {"Authorization": "Basic " + base64.b64encode(f"ads:{ADMIN}".encode()).decode()}
    assert run.call("GET", "/v1/feeds/google.xml", None, headers=basic)[0] == 200
    for secret in (ADMIN, READER, SHOP):
        for wrong in _near_misses(secret):
            for base in (run.base, run.worker):
                run.call("GET", "/v1/users/alice/blocks/recommendations", wrong, base=base)
                run.call("GET", "/v1/users/alice/export", wrong, base=base)
                run.call("POST", "/v1/events", wrong, [_event("bob", 1)], base=base)
                run.call("GET", "/ui/dashboard", wrong, base=base)
                nearly = base64.b64encode(f"ads:{wrong}".encode()).decode()
                headers = {"Authorization": "Basic " + nearly}
                run.call("GET", "/v1/feeds/google.xml", None, headers=headers, base=base)
    # refused scopes and bad bodies (which carry no secret: answers may quote a caller's input)
    assert run.call("GET", "/v1/users/alice/export", READER)[0] == 403
    assert run.call("POST", "/v1/models/recs/activate", READER, {"version": "v"})[0] == 403
    assert run.call("POST", "/v1/models/recs/activate", ADMIN, {"version": "nope"})[0] == 404
    assert run.call("POST", "/v1/events", SHOP, b"{not json")[0] == 400
    assert run.call("POST", "/v1/events", SHOP, [{"user_id": "u"}])[0] == 202
    bad = {"template": "{{ x ", "user_ids": ["u"]}
    assert run.call("POST", "/v1/render", READER, bad)[0] == 400
    assert run.call("DELETE", "/v1/users/alice", ADMIN)[0] in (200, 202)


def _bad_settings(tmp: Path) -> str:
    """The output of `persona run` started with settings it refuses, each naming a secret."""
    cases = [
        {"PERSONA_API_KEYS": f"admin:{ADMIN}:bogus-scope"},
        {"PERSONA_API_KEYS": f"admin:{ADMIN}"},
        {"PERSONA_API_KEYS": f"admin:{ADMIN[:20]}:content:read"},  # too short
        {"PERSONA_WEBHOOK_URLS": "ftp://x", "PERSONA_WEBHOOK_SECRET": WEBHOOK},
        {"PERSONA_WEBHOOK_URLS": "http://x", "PERSONA_WEBHOOK_SECRET": WEBHOOK[:20]},
        {"PERSONA_CLUSTER_SECRET": SHORT_CLUSTER},  # too short (32+)
    ]
    output = ""
    for n, extra in enumerate(cases):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_")} | extra
        done = subprocess.run(
            [sys.executable, "-m", "persona", "run", "--no-demo", "--port", str(free_port()),
             "--data-dir", str(tmp / f"bad{n}")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, (extra, done.stderr)
        output += done.stdout + done.stderr
    return output


def test_no_secret_in_files_output_metrics_audit_or_answers(run: Run, tmp_path: Path) -> None:
    _exercise(run)
    metrics = [run.call("GET", "/metrics", None, base=b)[1] for b in (run.base, run.worker)]
    wait_until(lambda: b"consent_applied" in (run.data_dir / "audit.log").read_bytes(), 60)
    places: dict[str, bytes] = {
        "output": run.log.read_bytes(),
        "metrics": b"".join(metrics),
        "answers": b"".join(run.answers),
        "bad settings": _bad_settings(tmp_path).encode(),
    }
    cluster = (run.data_dir / "cluster-secret").read_text().strip()  # the embedded default's
    for path in run.data_dir.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.name != "cluster-secret":
            places[str(path)] = path.read_bytes()
    assert any(p.endswith("audit.log") for p in places) and len(places) > 5
    wrongs = [w for s in (ADMIN, READER, SHOP) for w in _near_misses(s)]
    leaks = [
        (where, form[:12])
        for secret in (*SECRETS, cluster, SHORT_CLUSTER, *[w.strip() for w in wrongs])
        for form in _forms(secret)
        for where, text in places.items()
        if form in text
    ]
    assert leaks == []
    assert b"Unauthorized" in places["answers"]
    assert b'"refused"' in places[str(run.data_dir / "audit.log")]


def test_the_data_dir_is_0700_and_the_audit_log_and_keys_0600(run: Run) -> None:
    assert stat.S_IMODE(run.data_dir.stat().st_mode) == 0o700
    run.call("GET", "/v1/users/x/export", None)  # at least one audit line
    wait_until(lambda: (run.data_dir / "audit.log").exists(), 10)
    for name in ("audit.log", "audit.log.lock", "cluster-secret"):
        assert stat.S_IMODE((run.data_dir / name).stat().st_mode) == 0o600, name


def _audit(run: Run) -> list[dict[str, Any]]:
    lines = (run.data_dir / "audit.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_the_audit_log_has_who_what_when_and_the_outcome(run: Run) -> None:
    user = f"carol-{os.getpid()}"
    consent = _event(user, 1, "consent", source="settings-page", props={"personalization": False})
    del consent["item_id"]
    assert run.call("POST", "/v1/events", SHOP, [consent])[0] == 202
    wait_until(lambda: any(r.get("event_id") == f"{user}-1" and r["action"] == "consent_applied"
                           for r in _audit(run)), 60, what="consent_applied")  # fmt: skip
    run.call("GET", f"/v1/users/{user}/export", ADMIN)
    run.call("DELETE", f"/v1/users/{user}", ADMIN)
    records = _audit(run)
    # After the erasure the user's records name them by pseudonym only (engine/audit.py): the
    # consent record (found by its event id) tells which.
    assert not [r for r in records if user in (r.get("user_id"), r.get("path", "").split("/"))]
    (applied,) = {r["user_id_hmac"] for r in records if r.get("event_id") == f"{user}-1"}
    mine = [r for r in records if r.get("user_id_hmac") == applied]
    kinds = {r["action"]: r for r in mine}
    assert set(kinds) >= {"consent_received", "consent_applied", "export", "erase"}
    assert kinds["consent_received"]["key"] == "shop"
    assert kinds["consent_applied"]["purposes"] == {"personalization": False}
    assert kinds["consent_applied"]["source"] == "settings-page"
    assert kinds["export"]["key"] == "admin" and kinds["erase"]["key"] == "admin"
    assert all({"ts", "action", "key", "outcome"} <= set(r) for r in records)
    denied = [r for r in records if r["action"] == "denied"]
    assert {r["remote"] for r in denied} == {"127.0.0.1"} and denied[0]["outcome"] == "refused"


def test_nothing_in_the_data_dir_is_open_to_group_or_others(run: Run) -> None:
    """The tables (personal data), the registry copy, the model cache, the readers' secondaries
    and the logs: private whatever the umask `persona run` was started with, so a data dir
    loosened later (a backup tool, a chmod) exposes nothing."""
    run.call("GET", "/v1/users/x/export", None)
    wait_until(lambda: (run.data_dir / "audit.log").exists(), 10)
    open_to_others = []
    for where, dirs, files in os.walk(run.data_dir):
        for name in dirs + files:
            path = Path(where) / name
            info = path.lstat()
            if not stat.S_ISLNK(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077:
                open_to_others.append(f"{path.relative_to(run.data_dir)} {info.st_mode:o}")
    assert open_to_others == []
