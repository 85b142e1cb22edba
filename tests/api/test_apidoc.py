"""docs/api.md is generated from the OpenAPI document and kept current."""

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
