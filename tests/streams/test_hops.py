"""Authenticated hops and signed records between Persona processes (issue 15 item 4), attacked
on two real workers sharing one embedded broker.

Worker `a` knows the caller's key; worker `b` does not: a request for a user `b` owns, sent to
`a`, can only be answered by `b` if `b` accepted the signed hop (it never saw a bearer it
knows). Hop headers are also forged, expired and replayed straight at `b`; records without the
cluster secret's signature are produced straight to the `models` and commands topics.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from engine.events import validate
from engine.signing import HOP_HEADER, ClusterKey
from models.bundle import read_bundle, save_model
from models.recs import fit_recommender
from streams.admin import COMMANDS_TOPIC, DEAD_LETTERS
from streams.broker import EmbeddedBroker
from streams.produce import ALL_INPUTS, Producer, ensure_topics
from streams.registry import MODELS_TOPIC, publish, read_messages
from streams.signed import RecordSigner
from tests.conftest import CLUSTER_SECRET, SCOPES, SECRET, Worker, http, start_worker, wait_until
from tests.models.synthetic import basket_events

pytestmark = pytest.mark.integration

USERS = [f"hop-{i}" for i in range(16)]
T0 = 1_291_190_000_000
OTHER = "other-key-secret-kkkkkkkkkkkkkk"
CLUSTER = ClusterKey(CLUSTER_SECRET)
SIGNER = RecordSigner(CLUSTER, "test")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Worker, Worker]]:
    root = tmp_path_factory.mktemp("hops")
    with EmbeddedBroker(log_file=root / "broker.log") as broker:
        a = start_worker(broker.url, root / "a")
        b = start_worker(broker.url, root / "b", {"PERSONA_API_KEYS": f"other:{OTHER}:{SCOPES}"})
        try:
            wait_until(
                lambda: all(http("GET", w.base + "/readyz", key=None)[0] == 200 for w in (a, b)),
                timeout=90,
                what="both workers ready after the rebalance",
            )
            asyncio.run(send_carts(broker.url, USERS, "h"))
            wait_until(lambda: len(_owned_by(a, b)) > 0, timeout=90, what="users of b via a")
            yield a, b
        finally:
            a.stop()
            b.stop()


async def send_carts(url: str, users: list[str], prefix: str) -> None:
    """One add_to_cart per user (event ids `prefix` + n), on 4-partition input topics."""
    await ensure_topics(url, 4, ALL_INPUTS)
    async with Producer(url) as producer:
        await producer.send_events(
            validate(
                {
                    "event_id": f"{prefix}{n}",
                    "type": "add_to_cart",
                    "user_id": u,
                    "ts": T0 + n,
                    "item_id": "i1",
                }
            )
            for n, u in enumerate(users)
        )


def _owned_by(a: Worker, b: Worker) -> list[str]:
    """Users whose profile `a` answers through `b` (forwarded and answered 200)."""
    owned = []
    for user in USERS:
        status, headers, _ = http("GET", f"{a.base}/v1/users/{user}/profile", timeout=5)
        if status == 200 and headers.get("X-Persona-Routed") == b.base:
            owned.append(user)
    return owned


def _metric(base: str, name: str) -> float:
    _, _, body = http("GET", base + "/metrics", key=None)
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _hop(target: str, key: ClusterKey = CLUSTER, age_ms: int = 0, method: str = "GET") -> str:
    now = int(time.time() * 1000) - age_ms
    return key.hop(method, target, "test", frozenset({"content:read"}), b"", now)


def test_a_forwarded_request_is_answered_by_an_owner_that_never_saw_the_bearer(
    pair: tuple[Worker, Worker],
) -> None:
    a, b = pair
    assert http("GET", f"{b.base}/v1/users/{USERS[0]}/profile")[0] == 401  # b: unknown key
    forwarded, accepted = (
        _metric(a.base, "persona_hops_forwarded_total"),
        _metric(b.base, "persona_hops_accepted_total"),
    )
    users = _owned_by(a, b)
    assert users, "no user of b was answered through a"
    assert _metric(a.base, "persona_hops_forwarded_total") >= forwarded + len(users)
    assert _metric(b.base, "persona_hops_accepted_total") >= accepted + len(users)
    status, _, body = http("GET", f"{a.base}/v1/users/{users[0]}/blocks/recommendations")
    assert status == 200 and body


def test_forged_expired_and_replayed_hops_are_refused(pair: tuple[Worker, Worker]) -> None:
    a, b = pair
    user = _owned_by(a, b)[0]
    target = f"/v1/users/{user}/profile"
    refused = _metric(b.base, "persona_hops_refused_total")
    good = _hop(target)
    assert http("GET", b.base + target, key=None, headers={HOP_HEADER: good})[0] == 200
    cases = {
        "replayed": good,
        "forged": _hop(target, ClusterKey("x" * 40)),
        "expired": _hop(target, age_ms=31_000),
        "other user": _hop(f"/v1/users/{user}x/profile"),
        "garbage": "v1;t=1;n=2;k=3;s=4;sig=5",
    }
    for what, header in cases.items():
        status, _, body = http("GET", b.base + target, key=None, headers={HOP_HEADER: header})
        assert status == 401, (what, status, body)
        assert json.loads(body)["status"] == 401 and CLUSTER_SECRET not in body.decode()
    # the block route (answered ahead of the middleware chain) checks hops the same way
    block = f"/v1/users/{user}/blocks/recommendations"
    forged = _hop(block, ClusterKey("y" * 40))
    assert http("GET", b.base + block, key=None, headers={HOP_HEADER: forged})[0] == 401
    assert http("GET", b.base + block, key=None, headers={HOP_HEADER: _hop(block)})[0] == 200
    # a hop signed for content:read does not erase
    erase = _hop(f"/v1/users/{user}", method="DELETE")
    assert (
        http("DELETE", f"{b.base}/v1/users/{user}", key=None, headers={HOP_HEADER: erase})[0] == 403
    )
    assert _metric(b.base, "persona_hops_refused_total") >= refused + len(cases) + 1


def test_an_unauthenticated_request_is_refused_before_any_forward(
    pair: tuple[Worker, Worker],
) -> None:
    a, b = pair
    user = _owned_by(a, b)[0]
    forwarded = _metric(a.base, "persona_hops_forwarded_total")
    seen = _metric(b.base, "persona_hops_accepted_total") + _metric(
        b.base, "persona_hops_refused_total"
    )
    for key in (None, OTHER, "x" * 30):  # none, b's own key (unknown to a), a wrong one
        status, headers, _ = http("GET", f"{a.base}/v1/users/{user}/profile", key=key)
        assert status == 401 and "X-Persona-Routed" not in headers
    assert _metric(a.base, "persona_hops_forwarded_total") == forwarded
    after = _metric(b.base, "persona_hops_accepted_total") + _metric(
        b.base, "persona_hops_refused_total"
    )
    assert after == seen


async def _produce(url: str, topic: str, key: bytes, value: bytes | None, headers: Any) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=url.split("://", 1)[1])
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def _dead_letter_reasons(url: str) -> list[str]:
    reasons = []
    async for msg in read_messages(url, [DEAD_LETTERS], idle=0.5):
        reasons += [v.decode() for k, v in msg.headers or () if k == "reason"]
    return reasons


def test_an_unsigned_erase_erases_nothing_and_a_signed_one_erases(
    pair: tuple[Worker, Worker],
) -> None:
    a, _ = pair
    url, user = a.broker_url, USERS[-1]
    assert wait_until(lambda: http("GET", f"{a.base}/v1/users/{user}/profile")[0] == 200, 60)
    body = json.dumps({"command": "erase", "user_id": user}).encode()
    unsigned = _metric(a.base, "persona_commands_unsigned_total")
    forged = ClusterKey("z" * 40).sign_record(COMMANDS_TOPIC, user.encode(), body, "x", 1)
    for headers in (None, forged):
        asyncio.run(_produce(url, COMMANDS_TOPIC, user.encode(), body, headers))
    wait_until(
        lambda: (
            _metric(a.base, "persona_commands_unsigned_total")
            + _metric(pair[1].base, "persona_commands_unsigned_total")
            >= unsigned + 2
        ),
        timeout=60,
        what="both unsigned erasures refused",
    )
    assert http("GET", f"{a.base}/v1/users/{user}/profile")[0] == 200  # not erased
    reasons = asyncio.run(_dead_letter_reasons(url))
    assert "unsigned command" in reasons
    assert "unsigned command: bad signature" in reasons
    headers = SIGNER.headers(COMMANDS_TOPIC, user.encode(), body)
    asyncio.run(_produce(url, COMMANDS_TOPIC, user.encode(), body, headers))
    wait_until(
        lambda: http("GET", f"{a.base}/v1/users/{user}/profile")[0] == 404,
        timeout=60,
        what="the signed erasure applied",
    )


def _active(worker: Worker, name: str, key: str = SECRET) -> str:
    status, _, body = http("GET", worker.base + "/v1/models", key=key)
    assert status == 200, body
    rows = json.loads(body)["models"]
    return next(r["version"] for r in rows if r["name"] == name and r["active"])


def test_unsigned_and_replayed_registry_records_change_nothing(
    pair: tuple[Worker, Worker], tmp_path: Path
) -> None:
    a, b = pair
    url = a.broker_url
    default = _active(a, "recs")
    model = fit_recommender(basket_events(), k=5)
    unsigned_model = fit_recommender(basket_events()[:-40], k=4)
    bundle = read_bundle(save_model(unsigned_model, tmp_path / "unsigned"))
    records = _bundle_records(bundle)
    refused = _metric(a.base, "persona_registry_records_refused_total")
    for key, value in records:  # a whole unsigned version, then its unsigned activation
        asyncio.run(_produce(url, MODELS_TOPIC, key.encode(), value, None))
    activation = json.dumps({"version": unsigned_model.version, "history": [], "at": "x"})
    asyncio.run(_produce(url, MODELS_TOPIC, b"active/recs", activation.encode(), None))
    wait_until(
        lambda: (
            _metric(a.base, "persona_registry_records_refused_total") >= refused + len(records) + 1
        ),
        timeout=60,
        what="the unsigned records counted",
    )
    listed = {r["version"] for r in json.loads(http("GET", a.base + "/v1/models")[2])["models"]}
    assert unsigned_model.version not in listed and _active(a, "recs") == default

    asyncio.run(publish(url, read_bundle(save_model(model, tmp_path / "signed")), SIGNER))
    first = json.dumps({"version": model.version, "history": [default], "at": "1"}).encode()
    first_headers = SIGNER.headers(MODELS_TOPIC, b"active/recs", first)
    asyncio.run(_produce(url, MODELS_TOPIC, b"active/recs", first, first_headers))
    for w, key in ((a, SECRET), (b, OTHER)):
        wait_until(
            lambda w=w, key=key: _active(w, "recs", key) == model.version,
            timeout=60,
            what="the signed activation served",
        )
    time.sleep(0.01)  # the next signature's time is later
    back = json.dumps({"version": default, "history": [model.version], "at": "2"}).encode()
    asyncio.run(
        _produce(
            url,
            MODELS_TOPIC,
            b"active/recs",
            back,
            SIGNER.headers(MODELS_TOPIC, b"active/recs", back),
        )
    )
    wait_until(lambda: _active(a, "recs") == default, 60, what="the rollback")
    replayed = _metric(a.base, "persona_registry_records_refused_total")
    asyncio.run(_produce(url, MODELS_TOPIC, b"active/recs", first, first_headers))  # replay
    wait_until(
        lambda: _metric(a.base, "persona_registry_records_refused_total") > replayed,
        timeout=60,
        what="the replayed activation refused",
    )
    assert _active(a, "recs") == default
    audit = (a.data_dir / "audit.log").read_text()
    folded = [json.loads(line) for line in audit.splitlines() if "model_change_folded" in line]
    assert any(r["key"] == "test" and r.get("version") == model.version for r in folded)


def _bundle_records(bundle: Any) -> list[tuple[str, bytes | None]]:
    from models.registry_log import bundle_records

    return bundle_records(bundle)
