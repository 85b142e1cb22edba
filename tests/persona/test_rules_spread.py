"""A rules change reaches every process within 10 s (issue 18 item 3): `persona run` with two
readers on its embedded broker; a PUT /v1/rules made through one process is served by the worker
and by each reader, whichever process took it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.conftest import http, wait_until
from tests.persona.runs import Run, persona_run

pytestmark = pytest.mark.integration
SPREAD = 10.0  # seconds: the bound for every worker and reader
MERCH = "merchandiser-kkkkkkkkkkkkkkkkkk"
KEYS = f"merch:{MERCH}:rules:admin"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with persona_run(tmp_path_factory.mktemp("rules"), 2, KEYS) as started:
        yield started


def version(url: str) -> str | None:
    status, _, body = http("GET", url + "/v1/rules", key=MERCH)
    return json.loads(body)["version"] if status == 200 else None


def everywhere(run: Run, wanted: str) -> bool:
    """The worker, and eight public answers in a row (the two readers share the port)."""
    return version(run.worker) == wanted and all(version(run.base) == wanted for _ in range(8))


def rules(n: int) -> dict[str, object]:
    return {"rules": [{"id": f"r{n}", "action": "exclude", "match": {"item_ids": [f"I{n}"]}}]}


def test_a_change_through_a_reader_or_the_worker_reaches_every_process(run: Run) -> None:
    before = version(run.base)
    assert before is not None
    for n, through in enumerate((run.base, run.worker)):
        started = time.monotonic()
        status, _, body = http("PUT", through + "/v1/rules", rules(n), key=MERCH)
        assert status == 200, body
        new = json.loads(body)["version"]
        assert new == str(int(before) + n + 1)
        wait_until(lambda new=new: everywhere(run, new), SPREAD, what=f"rules version {new}")
        assert time.monotonic() - started < SPREAD


def test_two_edits_of_one_version_through_two_processes_one_wins(run: Run) -> None:
    """The same `If-Match` through a reader and through the worker at once: one 200, one 412
    (before, both answered 200 with the same version and the later record replaced the other
    edit unseen), and every process serves the winner's document."""
    from concurrent.futures import ThreadPoolExecutor

    status, headers, _ = http("GET", run.worker + "/v1/rules", key=MERCH)
    assert status == 200
    etag = headers["ETag"]

    def put(through: str, n: int) -> tuple[int, dict[str, object]]:
        status, _, body = http(
            "PUT",
            through + "/v1/rules",
            rules(n),
            key=MERCH,
            headers={"If-Match": etag},
            timeout=30,
        )
        return status, json.loads(body) if body.startswith(b"{") else {"body": body.decode()}

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(put, (run.base, run.worker), (10, 11)))
    assert sorted(status for status, _ in answers) == [200, 412], answers
    won = next(body for status, body in answers if status == 200)

    def served(url: str) -> object:
        _, _, body = http("GET", url + "/v1/rules", key=MERCH)
        return json.loads(body)

    wait_until(
        lambda: served(run.worker) == won and all(served(run.base) == won for _ in range(8)),
        SPREAD,
        what="the winner's rules everywhere",
    )
