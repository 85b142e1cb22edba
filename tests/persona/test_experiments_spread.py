"""A content experiments change reaches every process within 10 s (issue 18 items 4 and 8):
`persona run` with two readers; a PUT /v1/experiments through a reader or the worker is served
by the worker and by each reader (the same signed record on the `models` topic as the rules)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.conftest import http, wait_until
from tests.persona.runs import Run, persona_run
from tests.persona.test_rules_spread import SPREAD

pytestmark = pytest.mark.integration
ADMIN = "data-scientist-kkkkkkkkkkkkkkkk"
KEYS = f"ds:{ADMIN}:models:admin"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with persona_run(tmp_path_factory.mktemp("experiments"), 2, KEYS) as started:
        yield started


def version(url: str) -> str | None:
    status, _, body = http("GET", url + "/v1/experiments", key=ADMIN)
    return json.loads(body)["version"] if status == 200 else None


def everywhere(run: Run, wanted: str) -> bool:
    """The worker, and eight public answers in a row (the two readers share the port)."""
    return version(run.worker) == wanted and all(version(run.base) == wanted for _ in range(8))


def document(n: int) -> dict[str, object]:
    arms = [{"variant": "default"}]
    return {"experiments": [{"name": f"x{n}", "block": "winback", "arms": arms, "holdout": 0.5}]}


def test_a_change_through_a_reader_or_the_worker_reaches_every_process(run: Run) -> None:
    before = version(run.base)
    assert before is not None
    for n, through in enumerate((run.base, run.worker)):
        started = time.monotonic()
        status, _, body = http("PUT", through + "/v1/experiments", document(n), key=ADMIN)
        assert status == 200, body
        new = json.loads(body)["version"]
        assert new == str(int(before) + n + 1)
        wait_until(lambda new=new: everywhere(run, new), SPREAD, what=f"experiments {new}")
        assert time.monotonic() - started < SPREAD
