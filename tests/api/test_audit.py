"""The audit trail (issue 15 item 6): refused requests on every route, bounded per address and
minute; model changes and consent with who, what, when and the outcome; the audit file's mode,
rotation and sharing between processes."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app, scope_for
from api.audit import REFUSALS, AuditFile, Refusals, attach_file
from api.auth import KeyRing
from api.content import ContentService
from api.limits import ServingOptions
from api.models_routes import ADMIN
from api.testing import MemoryState
from engine.audit import AuditPseudonyms
from engine.blocks import BlockPolicy, Renderer
from engine.events import validate
from models.registry import ModelSet
from tests.api.test_hot import _client as hot_client
from tests.api.test_models_routes import FakeAdmin

ALL = "all-" + "a" * 30
READER = "ro-" + "r" * 30
KEYS = (
    f"all:{ALL}:content:read,events:write,feeds:read,models:admin,privacy:admin;"
    f"ro:{READER}:content:read"
)
T0 = 1_700_000_000_000
# every route of the application that needs a key: (method, path)
ROUTES = [
    ("GET", "/v1/users/u1/blocks/recommendations"),
    ("GET", "/v1/users/u1/profile"),
    ("GET", "/v1/users/u1/explain"),
    ("GET", "/v1/users/u1/export"),
    ("DELETE", "/v1/users/u1"),
    ("GET", "/v1/users"),
    ("GET", "/v1/stats"),
    ("POST", "/v1/events"),
    ("POST", "/v1/collect"),
    ("POST", "/v1/blocks:batch"),
    ("POST", "/v1/render"),
    ("GET", "/v1/feeds/google"),
    ("GET", "/v1/items/A/similar"),
    ("GET", "/v1/models"),
    ("POST", "/v1/models/recs/activate"),
    ("POST", "/v1/models/recs/rollback"),
    ("GET", "/v1/models/experiment"),
    ("PUT", "/v1/models/experiment"),
    ("DELETE", "/v1/models/experiment"),
    ("GET", "/v1/models/experiments/x/report"),
    ("GET", "/v1/rules"),
    ("PUT", "/v1/rules"),
    ("GET", "/v1/experiments"),
    ("PUT", "/v1/experiments"),
    ("GET", "/v1/experiments/x/report"),
]


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _app() -> tuple[web.Application, FakeAdmin]:
    content = ContentService(MemoryState(), ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(KEYS, None))
    admin = FakeAdmin(content)
    app[ADMIN] = admin
    return app, admin


@pytest.fixture
async def setup() -> AsyncIterator[tuple[TestClient, FakeAdmin]]:
    app, admin = _app()
    async with TestClient(TestServer(app)) as client:
        yield client, admin


def _records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "persona.audit"]


def test_every_route_that_needs_a_key_is_in_the_list() -> None:
    app, _ = _app()
    known = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    keyed = {
        (method, path)
        for method, path in known
        if method != "HEAD" and scope_for(path, method) is not None and not path.startswith("/ui")
    }
    listed = {(m, p.replace("u1", "{user_id}")) for m, p in ROUTES}
    listed = {(m, p.replace("/recommendations", "/{block}")) for m, p in listed}
    listed = {(m, p.replace("feeds/google", "feeds/{name}")) for m, p in listed}
    listed = {(m, p.replace("/items/A/", "/items/{item_id}/")) for m, p in listed}
    listed = {(m, p.replace("/recs/", "/{name}/").replace("/x/", "/{name}/")) for m, p in listed}
    assert keyed == listed


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_refusals_on_every_route_are_audited(
    setup: tuple[TestClient, FakeAdmin], caplog: pytest.LogCaptureFixture, method: str, path: str
) -> None:
    client, _ = setup
    client.app[REFUSALS].window = 0.0  # every refusal its own line, to see each one
    with caplog.at_level(logging.INFO, "persona.audit"):
        nokey = await client.request(method, path)
        wrong = await client.request(method, path, headers=_bearer(ALL[:-1] + "b"))
        scope = await client.request(method, path, headers=_bearer(READER))
    expected = [401, 401]
    if scope_for(path, method) != "content:read":  # the reader key lacks the scope
        expected.append(403)
    assert [nokey.status, wrong.status] == [401, 401]
    denied = [r for r in _records(caplog) if r["action"] == "denied"]
    assert [r["status"] for r in denied] == expected
    assert all(r["path"] == path and r["method"] == method for r in denied)
    assert all(r["outcome"] == "refused" and r["remote"] == "127.0.0.1" for r in denied)
    assert [r["key"] for r in denied] == ["", "", "ro"][: len(expected)]
    assert (scope.status == 403) == (len(expected) == 3)
    answered = [a.headers.get("X-Request-Id") for a in (nokey, wrong, scope)]
    assert [r.get("request_id") for r in denied] == answered[: len(expected)]


@pytest.mark.parametrize("mode", ["front", "middleware", "chain"])
async def test_refused_block_reads_are_audited_on_every_server_path(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with await hot_client(mode) as client:
        client.app[REFUSALS].window = 0.0
        with caplog.at_level(logging.INFO, "persona.audit"):
            r = await client.get("/v1/users/u1/blocks/recommendations")
            assert r.status == 401
            r = await client.get("/v1/users/u1/blocks/recommendations", headers=_bearer("x" * 30))
            assert r.status == 401
    denied = [r for r in _records(caplog) if r["action"] == "denied"]
    assert [(r["status"], r["path"]) for r in denied] == [
        (401, "/v1/users/u1/blocks/recommendations")
    ] * 2


async def test_refused_ui_pages_are_audited_and_the_sign_in_page_is_not(
    setup: tuple[TestClient, FakeAdmin], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = setup
    client.app[REFUSALS].window = 0.0
    with caplog.at_level(logging.INFO, "persona.audit"):
        assert (await client.get("/ui/preview")).status == 401  # a browser navigating
        assert (await client.get("/ui/dashboard", headers=_bearer("z" * 30))).status == 401
        assert (await client.get("/ui/preview", headers=_bearer(READER))).status == 200
    (record,) = _records(caplog)
    assert record["action"] == "denied" and record["path"] == "/ui/dashboard"


async def test_a_rate_limited_key_is_named_in_its_refusal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    content = ContentService(MemoryState(), ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(KEYS, None), ServingOptions({"ro": 0.01}))
    async with TestClient(TestServer(app)) as client:
        client.app[REFUSALS].window = 0.0
        with caplog.at_level(logging.INFO, "persona.audit"):
            for path in (
                "/v1/users/u/profile",
                "/v1/users/u/profile",
                "/v1/users/u/blocks/winback",
            ):
                await client.get(path, headers=_bearer(READER))
    denied = [(r["status"], r["key"], r["path"]) for r in _records(caplog)]
    assert denied == [(429, "ro", "/v1/users/u/profile"), (429, "ro", "/v1/users/u/blocks/winback")]


async def test_a_flood_of_refusals_writes_two_lines_per_address_and_minute(
    setup: tuple[TestClient, FakeAdmin], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = setup
    started = time.monotonic()
    with caplog.at_level(logging.INFO, "persona.audit"):
        for n in range(120):
            await client.get(f"/v1/users/u{n}/profile", headers=_bearer(f"guess-{n:030d}"))
        took = time.monotonic() - started
        await client.get("/v1/users/u/export", headers=_bearer(READER))
        assert len(_records(caplog)) == 1  # the first; the rest are counted
        client.app[REFUSALS].flush(everything=True)  # as the minute's end (or a stop) does
    first, repeats = _records(caplog)
    assert first["action"] == "denied" and first["path"] == "/v1/users/u0/profile"
    assert repeats["action"] == "denied_repeats" and repeats["remote"] == "127.0.0.1"
    assert repeats["count"] == 120 and repeats["keys"] == ["ro"]
    statuses = repeats["statuses"]
    # 30 a minute, then 429: the allowance refills half a token a second while the flood runs
    refilled = math.floor(took * 30 / 60) + 1
    assert statuses["403"] == 1 and statuses["401"] + statuses["429"] == 119
    assert 29 <= statuses["401"] <= 29 + refilled and statuses["429"] >= 90 - refilled


def test_windows_close_after_a_minute_and_addresses_are_bounded() -> None:
    lines: list[dict[str, Any]] = []
    tally = Refusals(lambda line: lines.append(json.loads(line)), window=60.0, max_clients=10)
    for n in range(5000):  # 5,000 addresses in the same second
        tally.refused(f"10.0.{n // 256}.{n % 256}", 401, "", "GET", "/v1/stats", now=100.0)
    assert len(tally.windows) == 11  # 10 addresses, then one shared window
    assert len(lines) == 11
    tally.refused("10.0.0.0", 401, "", "GET", "/v1/stats", now=130.0)  # in its minute: counted
    assert len(lines) == 11
    tally.flush(now=159.0)
    assert len(lines) == 11
    tally.flush(now=160.0)
    repeats = [line for line in lines if line["action"] == "denied_repeats"]
    assert sorted((r["remote"], r["count"]) for r in repeats) == [("*", 4989), ("10.0.0.0", 1)]
    assert tally.windows == {}
    tally.refused("10.0.0.0", 403, "k", "GET", "/v1/stats", now=161.0)  # a new minute
    assert lines[-1]["action"] == "denied" and lines[-1]["key"] == "k"


async def test_model_changes_are_audited_with_their_outcome(
    setup: tuple[TestClient, FakeAdmin], caplog: pytest.LogCaptureFixture
) -> None:
    client, admin = setup
    version = admin.candidate.version
    auth = _bearer(ALL)
    with caplog.at_level(logging.INFO, "persona.audit"):
        await client.post("/v1/models/recs/activate", data=b"[", headers=auth)
        await client.post("/v1/models/recs/activate", json={"version": "nope"}, headers=auth)
        await client.post("/v1/models/recs/activate", json={"version": version}, headers=auth)
        experiment = {"name": "exp1", "model": "recs", "candidate": version, "share": 0.5}
        await client.put("/v1/models/experiment", json=experiment, headers=auth)
        await client.delete("/v1/models/experiment", headers=auth)
        await client.get("/v1/models", headers=auth)  # a read: not audited
    records = _records(caplog)
    assert [(r["action"], r["outcome"], r["status"]) for r in records] == [
        ("model_activate", "failed", 400),
        ("model_activate", "failed", 404),
        ("model_activate", "ok", 200),
        ("experiment_start", "ok", 200),
        ("experiment_stop", "ok", 200),
    ]
    assert all(r["key"] == "all" and r["ts"].endswith("Z") for r in records)
    assert records[1]["requested"] == "nope" and "version" not in records[1]
    assert records[2]["model"] == "recs" and records[2]["version"] == version
    assert records[3]["name"] == "exp1" and records[3]["candidate"] == version
    assert records[4]["stopped"] == "exp1"


async def test_consent_received_names_the_key_the_user_and_the_purposes(
    setup: tuple[TestClient, FakeAdmin], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = setup
    consent = {
        "event_id": "c1",
        "type": "consent",
        "user_id": "u7",
        "ts": T0,
        "source": "cookie-banner",
        "props": {"email": False, "ads": True, "text_version": "v3"},
    }
    view = {"event_id": "v1", "type": "page_view", "user_id": "u7", "ts": T0}
    bad = {**consent, "event_id": "c2", "props": {"email": "yes"}}
    with caplog.at_level(logging.INFO, "persona.audit"):
        r = await client.post("/v1/events", json=[consent, view, bad], headers=_bearer(ALL))
    assert (await r.json())["accepted"] == 2
    (record,) = _records(caplog)
    assert record["action"] == "consent_received" and record["outcome"] == "ok"
    assert record["key"] == "all" and record["user_id"] == "u7" and record["event_id"] == "c1"
    assert record["purposes"] == {"email": False, "ads": True}
    assert record["source"] == "cookie-banner" and record["text_version"] == "v3"
    assert record["event_ts"] == T0


def _lines(directory: Path) -> list[str]:
    found: list[str] = []
    for path in sorted(directory.glob("audit.log*")):
        if not path.name.endswith(".lock"):
            found += path.read_text().splitlines()
    return found


def test_the_audit_file_is_0600_and_rotates_keeping_n_files(tmp_path: Path) -> None:
    handler = AuditFile(tmp_path / "audit.log", max_bytes=2000, keep=3)
    logger = logging.getLogger("test.audit.rotation")
    logger.addHandler(handler)
    try:
        for n in range(1000):
            logger.warning(json.dumps({"n": n, "pad": "x" * 50}))
    finally:
        logger.removeHandler(handler)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.log", "audit.log.1", "audit.log.2", "audit.log.3", "audit.log.lock"]
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.stat().st_size <= 2000
    newest = json.loads((tmp_path / "audit.log").read_text().splitlines()[-1])
    assert newest["n"] == 999
    kept = [json.loads(line)["n"] for line in _lines(tmp_path)]
    assert sorted(kept) == list(range(1000 - len(kept), 1000))  # the newest, none lost between


WRITER = """
import json, logging, sys
from pathlib import Path
from api.audit import AuditFile
logger = logging.getLogger("w")
logger.addHandler(AuditFile(Path(sys.argv[1]), max_bytes=4000, keep=1000))
for n in range(400):
    logger.warning(json.dumps({"writer": sys.argv[2], "n": n, "pad": "y" * 40}))
"""


def test_processes_sharing_the_audit_file_lose_and_mangle_no_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    root = Path(__file__).resolve().parents[2]
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w)], cwd=root)
        for w in range(3)
    ]
    assert [w.wait(60) for w in writers] == [0, 0, 0]
    records = [json.loads(line) for line in _lines(tmp_path)]
    assert sorted((r["writer"], r["n"]) for r in records) == [
        (str(w), n) for w in range(3) for n in range(400)
    ]
    assert all(p.stat().st_size <= 4000 for p in tmp_path.glob("audit.log*"))


def test_attach_tightens_an_audit_log_others_could_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "audit.log").write_text("")
    (tmp_path / "audit.log").chmod(0o644)
    handler = attach_file(tmp_path)
    try:
        assert stat.S_IMODE((tmp_path / "audit.log").stat().st_mode) == 0o600
        assert "audit.log" in caplog.text and "0644" in caplog.text
    finally:
        logging.getLogger("persona.audit").removeHandler(handler)
        logging.getLogger("persona.audit").propagate = True


def _app_holding(
    state: MemoryState, user: str, options: ServingOptions | None = None
) -> web.Application:
    """The API over `state` once it holds one page view of `user`."""
    state.apply(validate({"event_id": "e1", "type": "page_view", "user_id": user, "ts": T0}))
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    if options is None:
        return create_app(content, KeyRing.from_settings(KEYS, None))
    return create_app(content, KeyRing.from_settings(KEYS, None), options)


class _SlowErasure(MemoryState):
    """A state whose erasures are not applied before the DELETE stops waiting (a backlog)."""

    async def erase(self, user_id: str) -> None:
        return None  # queued, not applied yet


async def test_an_erasure_not_applied_within_the_request_timeout_answers_202_not_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The DELETE waits for the erasure within the request's own timeout. It waited
    `ERASE_WAIT` (10 s) whatever PERSONA_REQUEST_TIMEOUT said (10 s by default), so an erasure
    not applied at once (a reader or standby during a rebalance, seen in
    tests/streams/test_erase_during_rebalance.py) was answered by the timeout: a 503 "the
    request took longer than 10 s", the erasure queued but neither audited nor answered with
    its request id, the caches of the user not dropped."""
    state = _SlowErasure()
    app = _app_holding(state, "u8", ServingOptions(request_timeout=1.0))
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.INFO, "persona.audit"):
            r = await client.delete("/v1/users/u8", headers=_bearer(ALL))
            body = await r.json()
    assert r.status == 202, body
    assert body["erased"] is False and body["existed"] is True
    (record,) = [r for r in _records(caplog) if r["action"] == "erase"]
    assert record["request_id"] == body["request_id"] and record["completed"] is False


class _RevokedMeanwhile(MemoryState):
    """A worker that owns the user's partition when the DELETE arrives and loses it in a
    rebalance while the erasure waits behind its backlog: Faust drops the revoked partition's
    table here (the profile is gone from this process), another worker owns it now."""

    moved = False

    def owner_url(self, user_id: str) -> str | None:
        return "http://127.0.0.1:9" if self.moved else None

    async def erase(self, user_id: str) -> None:
        self.erased.append(user_id)  # queued behind the backlog, not applied here

        async def revoke() -> None:
            await asyncio.sleep(0.2)
            self.moved = True
            self.profiles.clear()

        self.revoking = asyncio.ensure_future(revoke())


async def test_an_erasure_whose_partition_moved_during_the_wait_is_not_claimed_done() -> None:
    """The DELETE took the profile's absence after its wait for the erasure: a partition revoked
    meanwhile (its table dropped here, the erase command still waiting for the new owner)
    answered 200 `erased: true` though nothing had erased the user. It answers 202 `erased`
    false with `reason` "ownership_moved"; the erase command stays queued for the new owner."""
    state = _RevokedMeanwhile()
    app = _app_holding(state, "u9")
    async with TestClient(TestServer(app)) as client:
        r = await client.delete("/v1/users/u9", headers=_bearer(ALL))
        body = await r.json()
    assert r.status == 202, body
    assert body["erased"] is False and body["existed"] is True
    assert body["reason"] == "ownership_moved", body
    assert state.erased == ["u9"]


class _OwnedElsewhere(MemoryState):
    """A worker whose peer owns every user's partition and cannot be reached: the DELETE is
    answered here (api/routing.py answers locally), where only a standby copy may hold them."""

    def owner_url(self, user_id: str) -> str | None:
        return "http://127.0.0.1:9"


class _OwnerUnknown(MemoryState):
    """A worker in the middle of a rebalance (or a reader whose worker's view says "unknown"):
    nobody is known to own any partition, and this process holds only what it had."""

    def owner_known(self, user_id: str) -> bool:
        return False


@pytest.mark.parametrize("state_type", [_OwnedElsewhere, _OwnerUnknown])
async def test_an_erasure_the_process_cannot_know_is_done_is_not_claimed_done(
    state_type: type[MemoryState], caplog: pytest.LogCaptureFixture
) -> None:
    """Two cases where nothing of the user is held here and the erasure's outcome is not known:
    - owned elsewhere (seen under two workers with one stopped: the other answered the DELETE of
      a user it did not hold with 200 `erased: true, existed: false`, while the owner still had
      the profile; the erase command waited on the owner's partition);
    - ownership unknown (during a rebalance `owner_url` is None, so the DELETE is answered here;
      the owner, whoever it turns out to be, may still hold the profile).
    Both answer 202, `erased` false and `existed` null, the erasure queued all the same on the
    command topic. A copy held here (a standby) that loses the user still confirms it."""
    state = state_type()
    unknown = state_type is _OwnerUnknown
    app = _app_holding(state, "held")
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.INFO, "persona.audit"):
            r = await client.delete("/v1/users/elsewhere", headers=_bearer(ALL))
            body = await r.json()
            assert r.status == 202, body
            assert body["erased"] is False and body["existed"] is None
            assert body["reason"] == ("ownership_unknown" if unknown else "owner_unreachable")
            assert state.erased == ["elsewhere"]  # queued all the same, for the owner
            r = await client.delete("/v1/users/held", headers=_bearer(ALL))
            body = await r.json()
            assert r.status == 200 and body["erased"] is True and body["existed"] is True
            assert "reason" not in body
    first, second = [r for r in _records(caplog) if r["action"] == "erase"]
    assert first["completed"] is False and first["existed"] is None
    assert second["completed"] is True and second["existed"] is True


@pytest.mark.parametrize("state_type", [_OwnedElsewhere, _OwnerUnknown])
async def test_an_export_the_process_cannot_know_is_empty_is_not_claimed_empty(
    state_type: type[MemoryState], caplog: pytest.LogCaptureFixture
) -> None:
    """Answered away from the user's owner (unreachable) or while nobody is known to own the
    user's partition (a rebalance; a reader whose worker does not hold the partition), with
    nothing of the user here: the export answered 404 "nothing is stored about user", an
    access request told no data exists while the owner holds a profile. Now a 503 saying the
    owner could not be asked, with Retry-After, audited with `found` null; a user held here is
    exported as before."""
    state = state_type()
    app = _app_holding(state, "held")
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.INFO, "persona.audit"):
            r = await client.get("/v1/users/elsewhere/export", headers=_bearer(ALL))
            body = await r.json()
            assert r.status == 503, body
            assert "nothing is stored" not in body["detail"] and "owner" in body["detail"]
            assert int(r.headers["Retry-After"]) >= 1
            r = await client.get("/v1/users/held/export", headers=_bearer(ALL))
            assert r.status == 200 and (await r.json())["user_id"] == "held"
    first, second = [r for r in _records(caplog) if r["action"] == "export"]
    assert first["found"] is None and second["found"] is True


async def test_an_erasure_not_confirmed_in_time_answers_202_with_a_request_id_and_is_audited(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import api.privacy

    monkeypatch.setattr(api.privacy, "ERASE_WAIT", 0.2)
    state = _SlowErasure()
    app = _app_holding(state, "u9")
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.INFO, "persona.audit"):
            r = await client.delete("/v1/users/u9", headers=_bearer(ALL))
        body = await r.json()
    assert r.status == 202 and body["erased"] is False and body["existed"] is True
    assert body["reason"] == "not_applied_yet"  # its own partition: behind its backlog
    assert body["request_id"] == r.headers["X-Request-Id"]  # the request's own id
    (record,) = [r for r in _records(caplog) if r["action"] == "erase"]
    assert record["request_id"] == body["request_id"] and record["completed"] is False
    # the erasure's record names the user by pseudonym (no cluster secret here: keyed with "")
    assert record["user_id_hmac"] == AuditPseudonyms("").of("u9") and "user_id" not in record
    assert record["path"] == "/v1/users/{user_id}" and record["key"] == "all"
