"""`POST /v1/render` attacked over HTTP: the issue's payload against a state with a data dir and a
key file, the sandbox-escape corpus, and hostile templates that must end in a 4xx or per-recipient
errors while the same process keeps answering `/healthz` and block GETs."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api import render
from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.limits import ServingOptions
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import Product
from engine.sandbox import RequestBudget
from engine.settings import Settings
from models.registry import ModelSet
from tests.engine.test_sandbox import FILE_CONTENT, FORBIDDEN, PAYLOADS, SECRET

AUTH = {"Authorization": "Bearer reader-key-0123456789abcdef"}
KEYS = "reader:reader-key-0123456789abcdef:content:read"
ISSUE = '{{ blocks.content.state.data_dir.joinpath("local-api-key").read_text() }}'


class DiskState(MemoryState):
    """The in-memory state with what the real one carries: a data dir holding the local key file,
    the settings with secrets; `reading` is set once a render reads a profile."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.settings = Settings(api_keys=f"admin:{SECRET}:privacy:admin", data_dir=data_dir)
        self.reading = asyncio.Event()

    def profile(self, user_id: str):  # type: ignore[no-untyped-def]
        self.reading.set()
        return super().profile(user_id)


@pytest.fixture
def state(tmp_path: Path) -> DiskState:
    (tmp_path / "local-api-key").write_text(FILE_CONTENT)
    s = DiskState(tmp_path)
    for item in ModelSet.default().recs.popular[:20]:
        s.put_product(
            Product(item, f"P {item}", f"https://x/p/{item}", f"https://x/i/{item}.jpg", 1.0, "GBP")
        )
    return s


@pytest.fixture
async def client(state: DiskState) -> AsyncIterator[TestClient]:
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(KEYS, None), ServingOptions({}, 3.0))
    async with TestClient(TestServer(app)) as c:
        yield c


def assert_clean(text: str, data_dir: Path) -> None:
    assert not FORBIDDEN.search(text), text[:500]
    assert SECRET not in text and FILE_CONTENT not in text and str(data_dir) not in text


async def test_the_issue_payload_returns_no_key(client: TestClient, state: DiskState) -> None:
    """As written, the payload reads `blocks.content`, no block: a 400 before anything renders
    (api/render.py `template_names_checked`); through an alias of `blocks`, which that check
    does not follow, it reaches the sandbox, which refuses it as it did."""
    r = await client.post("/v1/render", json={"template": ISSUE, "user_ids": ["u1"]}, headers=AUTH)
    text = await r.text()
    assert r.status == 400 and "blocks.content" in (await r.json())["detail"]
    assert_clean(text, state.data_dir)
    aliased = "{% set b = blocks %}" + ISSUE.replace("blocks.", "b.")
    r = await client.post(
        "/v1/render", json={"template": aliased, "user_ids": ["u1"]}, headers=AUTH
    )
    text = await r.text()
    assert r.status == 200
    assert_clean(text, state.data_dir)
    assert (await r.json())["results"]["u1"]["content"] in ("", None)


async def test_the_escape_corpus_over_http(client: TestClient, state: DiskState) -> None:
    for payload in PAYLOADS:
        body = {"template": payload, "user_ids": ["u1", "u2"], "data": {"u1": {"x": 1}}}
        r = await client.post("/v1/render", json=body, headers=AUTH)
        assert r.status in (200, 400), payload
        assert_clean(await r.text(), state.data_dir)


async def test_a_hostile_render_leaves_the_process_answering(
    client: TestClient, state: DiskState
) -> None:
    """While 1,000 recipients of a CPU-burning template are rendered, `/healthz` and a block GET
    are answered, and the render itself ends in per-recipient errors."""
    burn = (
        "{{ blocks.recommendations }}"
        "{% for a in range(10000) %}{{ range(10000)|list|sort|length }}{% endfor %}"
    )
    ids = [f"u{i}" for i in range(1000)]
    task = asyncio.create_task(
        client.post("/v1/render", json={"template": burn, "user_ids": ids}, headers=AUTH)
    )
    await state.reading.wait()  # the render is under way
    health = await client.get("/healthz")
    block = await client.get("/v1/users/u1/blocks/recommendations", headers=AUTH)
    assert health.status == 200 and block.status == 200
    assert not task.done()  # both were answered before the render finished
    r = await task
    payload = await r.json()
    assert r.status == 200 and payload["errors"] == 1000
    errors = {res["error"].split(":")[0] for res in payload["results"].values()}
    assert errors == {"BudgetExceeded"}
    assert all(res["content"] is None for res in payload["results"].values())


@pytest.mark.parametrize(
    "template",
    [
        "{{ 9**(9**9) }}",
        "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
        "{% for a in range(10000) %}{% for b in range(10000) %}x{% endfor %}{% endfor %}",
        '{{ "x" * 10**9 }}',
        '{{ "a"|center(10**9) }}',
        '{{ "%0999999999d"|format(1) }}',
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "{{ ('%(a)s' * 1000) % {'a': 'x' * 200000} }}",
        "{{ ('%(a)1000s' * 5000)|format(a='x') }}",
    ],
)
async def test_hostile_templates_get_per_recipient_errors(
    client: TestClient, template: str
) -> None:
    r = await client.post(
        "/v1/render", json={"template": template, "user_ids": ["a", "b"]}, headers=AUTH
    )
    payload = await r.json()
    assert r.status == 200 and payload["errors"] == 2
    for result in payload["results"].values():
        assert result["content"] is None and result["error"].startswith("BudgetExceeded")


async def test_an_amplifying_format_is_refused_before_it_allocates(client: TestClient) -> None:
    """One `%` naming a 200,000-character value 1,000 times would build 200 MB in one C call."""
    template = "{{ ('%(a)s' * 1000) % {'a': 'x' * 200000} }}"
    tracemalloc.start()
    try:
        r = await client.post(
            "/v1/render", json={"template": template, "user_ids": ["a"]}, headers=AUTH
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    result = (await r.json())["results"]["a"]
    assert r.status == 200 and result["content"] is None
    assert "a formatted text above" in result["error"]
    assert peak < 32 << 20


async def test_the_response_size_is_bounded(client: TestClient) -> None:
    """1,000 recipients x 256 KiB: messages until the request's 32 MiB, then errors (in lines
    of 512 octets: a longer line is wrapped, at a CPU cost charged to the request)."""
    template = "{{ ('x' * 511 + '\\n') * 512 }}"
    ids = [f"u{i}" for i in range(1000)]
    r = await client.post("/v1/render", json={"template": template, "user_ids": ids}, headers=AUTH)
    results = (await r.json())["results"]
    sent = [res for res in results.values() if res["content"] is not None]
    assert r.status == 200 and len(results) == 1000
    assert sum(len(res["content"]) for res in sent) <= render.REQUEST_LIMITS.output_bytes
    assert len(sent) == render.REQUEST_LIMITS.output_bytes // 262144
    refused = [res["error"] for res in results.values() if res["content"] is None]
    assert len(refused) == 1000 - len(sent)
    assert all("budget is spent" in e or "larger than" in e for e in refused)


@pytest.mark.parametrize(
    "template",
    [
        "{{" + "(" * 3000 + "1" + ")" * 3000 + "}}",
        "{% if 1 %}" * 200 + "x" + "{% endif %}" * 200,
        "{{ x|pprint }}",
        "{% for %}",
    ],
)
async def test_templates_that_do_not_compile_are_a_400(client: TestClient, template: str) -> None:
    r = await client.post(
        "/v1/render", json={"template": template, "user_ids": ["a"]}, headers=AUTH
    )
    body = await r.json(content_type=None)
    assert r.status == 400 and "does not compile" in body["detail"]
    assert not re.search(r"<\w+ object|0x[0-9a-f]{6,}", body["detail"])


async def test_merge_data_is_json_values_only(client: TestClient) -> None:
    body = {"template": "{{ user.x }}", "user_ids": ["a"], "data": {"a": {"x": b"\x00bytes"}}}
    r = await client.post(
        "/v1/render",
        data=msgpack.packb(body, use_bin_type=True),
        headers={**AUTH, "Content-Type": "application/msgpack"},
    )
    assert r.status == 400 and "JSON values" in (await r.json(content_type=None))["detail"]


async def test_wrapping_a_messages_lines_is_charged_to_the_requests_cpu(state: DiskState) -> None:
    """A template that renders a MB of breakable long lines in a millisecond costs ~0.7 s to
    wrap (engine/email_lines.py): that CPU counts against the request's, so a request cannot
    wrap far past its budget. Here the request has 20 ms: the first message spends it (its
    wrapping alone takes 30x that), the second is refused."""
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    template = render.ENV.from_string("{{ 'x ' * 500000 }}")
    total = dataclasses.replace(render.REQUEST_LIMITS, cpu_seconds=0.02)
    budget = RequestBudget(render.MESSAGE_LIMITS, total, 60.0)
    first, outcome = await render.render_one(template, content, "u1", None, budget)
    assert outcome == "" and "\n" in first["content"]  # wrapped
    second, outcome = await render.render_one(template, content, "u2", None, budget)
    assert outcome == render.CUT and second["content"] is None
    assert "budget is spent" in second["error"]
