"""Requests split by owner: with two workers in one group, `POST /v1/blocks:batch` and
`POST /v1/render` sent to worker a answer a's users from a's tables and ask worker b once (a
signed hop) for b's users, so b's users get what their owner makes, not a's standby copy. Before
2026-12-07 a batch (and before 2026-12-08 a render) answered every user from the tables of
whichever process received it. The two tests share one group (`group`: two workers, their users'
carts folded)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

import msgpack
import pytest

from engine.sources import read_catalog
from persona.supervisor import DEMO_DIR
from tests.conftest import (
    T0,
    Worker,
    http,
    metric,
    owners_via,
    send_carts,
    two_workers,
    wait_until,
)

pytestmark = pytest.mark.integration

HOPS = "persona_hops_accepted_total"
OWNER_FALLBACKS = "persona_http_batch_owner_fallbacks_total"


def cart_of(worker: Worker, user: str) -> tuple[dict[str, int] | None, str | None]:
    status, headers, body = http("GET", f"{worker.base}/v1/users/{user}/profile", timeout=5)
    cart = json.loads(body)["cart"] if status == 200 else None
    return cart, headers.get("X-Persona-Routed")


def own_block(worker: Worker, user: str) -> tuple[str, dict]:
    """The cart_reminder `worker` itself answers for `user` (its ETag and JSON document)."""
    status, headers, body = http(
        "GET", f"{worker.base}/v1/users/{user}/blocks/cart_reminder?format=json", timeout=5
    )
    assert status == 200 and "X-Persona-Routed" not in headers, (status, headers)
    return headers["ETag"], json.loads(body)


@dataclass(frozen=True)
class Group:
    a: Worker
    b: Worker
    users: list[str]  # every user, each with two items in their cart
    of_a: list[str]  # those whose partition a owns
    of_b: list[str]  # those whose partition b owns (folded by b: a's copy may lag)


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    tmp_path = tmp_path_factory.mktemp("fanout")
    products = [p for p in islice(read_catalog(DEMO_DIR / "catalog.jsonl.gz"), 60)]
    items = [p.item_id for p in products if p.availability == "in_stock"][:2]
    assert len(items) == 2
    tag = uuid.uuid4().hex[:6]
    users = [f"fan-{tag}-{i}" for i in range(16)]
    with two_workers(tmp_path) as (broker, a, b):

        def carts(item: str, n: int) -> None:
            cart = dict.fromkeys(users, item)
            send_carts(broker.url, cart, f"{tag}-{n}", T0 + n * 1000, products if n == 0 else ())

        carts(items[0], 0)

        def folded(user: str) -> tuple[bool, str | None]:
            cart, routed = cart_of(a, user)
            return cart == {items[0]: 1}, routed

        owned = owners_via(a, users, folded, "every cart folded, seen via worker a")
        of_b = [u for u, owner in owned.items() if owner == b.base]
        of_a = [u for u, owner in owned.items() if owner == a.base]
        assert of_a and of_b, owned

        carts(items[1], 1)  # folded by each user's owner; b's users' copy on a may lag
        fresh = {items[0]: 1, items[1]: 1}
        wait_until(
            lambda: all(cart_of(b, u) == (fresh, None) for u in of_b),
            timeout=60,
            what="b folding its users' second item",
        )
        wait_until(
            lambda: all(cart_of(a, u) == (fresh, None) for u in of_a),
            timeout=60,
            what="a folding its users' second item",
        )
        # each owner knows both items, the one the other worker folded too (global catalog)
        wait_until(
            lambda: all(
                own_block(owner, u)[1]["fallback"] is False
                for owner, mine in ((a, of_a), (b, of_b))
                for u in mine
            ),
            timeout=60,
            what="personal cart_reminders from each user's owner",
        )
        yield Group(a, b, users, of_a, of_b)


def test_a_batch_asks_the_owner_of_the_other_workers_users(group: Group) -> None:
    a, b, users, of_a, of_b = group.a, group.b, group.users, group.of_a, group.of_b
    asked = [*reversed(users), users[0], of_b[0]]  # duplicates are answered once
    hops = metric(b.base, HOPS)
    body = {"block": "cart_reminder", "format": "json", "user_ids": asked}
    status, headers, raw = http("POST", f"{a.base}/v1/blocks:batch", body, timeout=30)
    assert status == 200, raw[:300]
    results = json.loads(raw)["results"]
    assert list(results) == list(dict.fromkeys(asked))  # the request's order
    for user in of_b:  # exactly what their owner answers, from the fresh cart
        etag, document = own_block(b, user)
        entry = results[user]
        assert entry["etag"] == etag and json.loads(entry["content"]) == document
        assert entry["fallback"] is False, entry
    for user in of_a:
        assert results[user]["etag"] == own_block(a, user)[0]
        assert results[user]["fallback"] is False, results[user]
    assert metric(b.base, HOPS) == hops + 1  # one sub-request for all of b's users

    # msgpack answers the same entries
    status, headers, raw = http(
        "POST",
        f"{a.base}/v1/blocks:batch",
        body,
        headers={"Accept": "application/msgpack"},
        timeout=30,
    )
    assert status == 200 and headers["Content-Type"].startswith("application/msgpack")
    assert msgpack.unpackb(raw, raw=False)["results"] == results


# a template that shows the recipient's own cart (the owner's fresh one: 2 items), their block,
# and the sender's merge fields; one recipient's `data` fails it (`boom` is no callable)
TEMPLATE = (
    "<p>{{ user.first_name }} has {{ user.cart_items }} items ({{ user.big }})</p>"
    "{% if user.boom %}{{ user.boom() }}{% endif %}{{ blocks.cart_reminder }}"
)


def render(worker: Worker, body: dict, accept: str = "application/json") -> tuple[dict, dict]:
    status, headers, raw = http(
        "POST", f"{worker.base}/v1/render", body, headers={"Accept": accept}, timeout=30
    )
    assert status == 200, raw[:300]
    if accept == "application/msgpack":
        assert headers["Content-Type"].startswith("application/msgpack")
        return msgpack.unpackb(raw, raw=False), headers
    return json.loads(raw), headers


def test_a_render_asks_the_owner_of_the_other_workers_recipients(group: Group) -> None:
    a, b, users, of_a, of_b = group.a, group.b, group.users, group.of_a, group.of_b
    ids = [*reversed(users), users[0]]  # a duplicate is rendered once
    # the sender's data: a name each; an integer msgpack cannot carry (the hop goes as JSON);
    # one of b's recipients and one of a's fail the template
    data = {u: {"first_name": f"N{i}", "big": 2**70} for i, u in enumerate(users)}
    data[of_b[0]]["boom"] = 1
    data[of_a[0]]["boom"] = 1
    body = {"template": TEMPLATE, "user_ids": ids, "data": data}
    hops, errors_b = metric(b.base, HOPS), metric(b.base, "persona_render_errors_total")
    answer, _ = render(a, body)
    results = answer["results"]
    assert list(results) == list(dict.fromkeys(ids))  # the request's order
    assert answer["errors"] == 2
    assert metric(b.base, HOPS) == hops + 1  # one sub-request for all of b's recipients
    assert metric(b.base, "persona_render_errors_total") == errors_b + 1  # counted by b
    for user in of_b:  # exactly what their owner renders itself, from its fresh profile
        own = render(b, {**body, "user_ids": [user]})[0]["results"][user]
        assert results[user] == own
    for user in [*of_a, *of_b][1:]:
        assert "has 2 items" in results[user]["content"] or user in (of_a[0], of_b[0])
    assert results[of_b[0]]["error"] and results[of_a[0]]["error"]
    for user in of_a:
        assert results[user] == render(a, {**body, "user_ids": [user]})[0]["results"][user]

    # msgpack answers the same
    assert render(a, body, "application/msgpack")[0] == answer


def test_a_render_answers_the_recipients_of_an_owner_out_of_time_here(group: Group) -> None:
    """`deadline_ms` 1: too little time to ask b; its recipients are rendered here (cut, as
    every recipient past the deadline), counted by route."""
    a, b, users, of_b = group.a, group.b, group.users, group.of_b
    label = OWNER_FALLBACKS + '{route="/v1/render"}'
    before, hops = metric(a.base, label), metric(b.base, HOPS)
    answer, _ = render(a, {"template": TEMPLATE, "user_ids": users, "deadline_ms": 1})
    assert list(answer["results"]) == users
    assert metric(a.base, label) == before + len(of_b)
    assert metric(b.base, HOPS) == hops
