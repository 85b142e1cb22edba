"""Every metric the user documentation advertises is on `/metrics`, and every metric
family and sample is written there once, scraped from a real `persona run` (its worker, with
scheduled retraining and a catalog feed, which add their own figures, and its reader)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from subprocess import STDOUT

from streams.broker import free_port
from tests.conftest import ROOT, http, wait_until
from tests.persona.test_run import _children, _kind, _start_run, _stop, _worker_port

# every user document that names metrics (docs/evaluation*.md name methods such as
# `persona_uncalibrated`, docs/benchmarks.md is history, docs/api.md is generated)
ADVERTISING = (
    ROOT / "README.md",
    *(
        ROOT / "docs" / f"{name}.md"
        for name in (
            "architecture",
            "data-scientists",
            "operations",
            "security",
            "serving",
            "state",
            "streams",
        )
    ),
    ROOT / "templates" / "README.md",
)
# a backticked metric name (labels may follow), or the abbreviated `_misses_total` after a full one
_NAME = re.compile(r"`(persona_[a-z_]+[a-z]|_[a-z_]+_total)[`{]")
_VALUE = re.compile(r" [^ ]+$")  # a sample line's value (exposition without timestamps)


def advertised() -> set[str]:
    """The metric names the docs name: `persona_...` in backticks ("`a_hits_total` /
    `_misses_total`" names `a_misses_total`)."""
    names: set[str] = set()
    previous = ""
    for path in ADVERTISING:
        for name in _NAME.findall(path.read_text()):
            if name.startswith("_"):
                name = previous.removesuffix("_total").rsplit("_", 1)[0] + name
            names.add(name)
            previous = name
    return names


def declared(text: str) -> list[str]:
    """The names of the metric families a scrape declares (`# TYPE name type`), in order."""
    return [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]


def samples(text: str) -> list[str]:
    """Every sample of a scrape as name{labels}, in order."""
    return [_VALUE.sub("", line) for line in text.splitlines() if line and line[0] != "#"]


def twice(names: list[str]) -> list[str]:
    return sorted(name for name, n in Counter(names).items() if n > 1)


def scrape(base: str) -> str:
    status, _, body = http("GET", base + "/metrics", key=None)
    assert status == 200, status
    return body.decode()


def test_the_parsing_of_the_docs_and_scrapes() -> None:
    names = advertised()
    assert {"persona_block_cache_hits_total", "persona_block_cache_misses_total"} <= names
    assert "persona_http_request_duration_seconds" in names and "persona_" not in names
    text = '# TYPE a_total counter\na_total{x="1"} 2.0\n# TYPE a_total counter\na_total{x="1"} 3\n'
    assert twice(declared(text)) == ["a_total"] and twice(samples(text)) == ['a_total{x="1"}']


def test_every_advertised_metric_is_exported_and_nothing_twice(tmp_path: Path) -> None:
    feed = f"http://127.0.0.1:{free_port()}/feed.jsonl@60"  # nothing listens: a failed pull
    env = {"PERSONA_RETRAIN_HOURS": "1000", "PERSONA_CATALOG_FEEDS": feed}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (tmp_path / "run.log").open("w") as out:
        proc = _start_run(tmp_path / "data", port, "--no-demo", 2, STDOUT, env, out.fileno())
    try:  # generous: the broker, the worker, then the reader start on a shared machine
        wait_until(lambda: http("GET", base + "/readyz", key=None)[0] == 200, 300, what="/readyz")
        pids = {_kind(pid): pid for pid in _children(proc.pid)}
        worker = f"http://127.0.0.1:{_worker_port(pids['worker'])}"
        wait_until(
            lambda: "persona_catalog_syncs_total{" in scrape(worker),
            timeout=120,
            what="the catalog feed's first pull",
        )
        scrapes = {"worker": scrape(worker), "reader": scrape(base)}
    finally:
        _stop(proc)
    exported: set[str] = set()
    for process, text in scrapes.items():
        assert twice(declared(text)) == [], process
        assert twice(samples(text)) == [], process
        exported.update(declared(text))
        exported.update(name.split("{")[0] for name in samples(text))
    assert sorted(advertised() - exported) == []
    for process, text in scrapes.items():  # both know the data dir (api/event_routes.py)
        assert "\npersona_data_dir_free_bytes " in text, process
