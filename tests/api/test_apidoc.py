"""docs/api.md is generated from the OpenAPI document and kept current."""

import os
import subprocess
import sys
from pathlib import Path

from api.apidoc import markdown
from api.openapi import openapi_document

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_committed_api_reference_is_current() -> None:
    assert DOC.read_text() == markdown(openapi_document()), (
        "docs/api.md is stale: run `make docs` (python -m api.apidoc > docs/api.md)"
    )


def test_every_route_of_the_document_is_in_the_reference() -> None:
    text = markdown(openapi_document())
    for path, item in openapi_document()["paths"].items():
        for method in item:
            assert f"### `{method.upper()} {path}`" in text


def test_the_document_is_the_same_in_every_process() -> None:
    """The feed route's content types came out of a set: their order in /openapi.json changed
    with each process's string hash seed, so two workers (or two builds) served different
    documents."""
    code = "import json; from api.openapi import openapi_document as d; print(json.dumps(d()))"
    root = str(Path(__file__).resolve().parents[2])
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONPATH": root},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        for seed in range(3)  # seeds 0 and 1 ordered the three content types apart
    }
    assert len(seen) == 1


BLOCK_ROUTES = {
    "/v1/users/{user_id}/blocks/{block}": "/v1/users/nobody/blocks/recommendations",
    "/v1/items/{item_id}/similar": "/v1/items/{item}/similar",
}


async def test_the_headers_a_block_get_sends_are_in_the_reference() -> None:
    """A sender tells a fallback by `X-Persona-Fallback` (an e-mail block has no `fallback`
    field) and revalidates with `ETag`: the reference listed no header of the block routes, so
    docs/api.md never said how. Every header they send beside the generic ones is documented
    on their 200 and 304, and shows in the Markdown."""
    from aiohttp.test_utils import TestClient, TestServer

    from api.app import create_app
    from api.auth import KeyRing
    from api.content import ContentService
    from api.limits import ServingOptions
    from api.testing import MemoryState
    from engine.blocks import BlockPolicy, Renderer
    from engine.catalog import Product
    from models.registry import ModelSet

    secret = "apidoc-headers-0123456789abcdef"
    state = MemoryState()
    popular = ModelSet.default().recs.popular[:20]
    for item in popular:
        state.put_product(
            Product(item, f"P {item}", f"https://x/p/{item}", f"https://x/i/{item}.jpg", 1.0, "GBP")
        )
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(
        content, KeyRing.from_settings(f"s:{secret}:content:read", None), ServingOptions()
    )
    auth = {"Authorization": f"Bearer {secret}"}
    doc = openapi_document()
    text = markdown(doc)
    generic = {"content-type", "content-length", "date", "server", "x-request-id"}
    async with TestClient(TestServer(app)) as client:
        for route, path in BLOCK_ROUTES.items():
            r = await client.get(path.format(item=popular[0]), headers=auth)
            assert r.status == 200, await r.text()
            again = await client.get(
                path.format(item=popular[0]), headers={**auth, "If-None-Match": r.headers["ETag"]}
            )
            assert again.status == 304
            for status, response in ((200, r), (304, again)):
                sent = {name.lower() for name in response.headers} - generic
                documented = doc["paths"][route]["get"]["responses"][str(status)].get("headers", {})
                assert sent and sent <= {name.lower() for name in documented}, (route, status)
        for name in ("X-Persona-Fallback", "ETag", "Cache-Control"):
            assert f"`{name}`" in text
