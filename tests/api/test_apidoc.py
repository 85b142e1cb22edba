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
