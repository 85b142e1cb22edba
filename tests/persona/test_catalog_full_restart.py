"""`persona catalog import --full` after `persona run` restarted on its data dir: the products the
feed leaves out are marked out of stock as before a restart, although the new embedded broker's
`catalog` topic started empty (the catalog kept in the worker's table is republished into it,
streams/adopt.py)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.conftest import http, metric, wait_until
from tests.persona.test_keep_state import _broker_url, _cli, _secret
from tests.persona.test_run import Running, _running

pytestmark = pytest.mark.integration

HEADER = "item_id,title,url,image_url,price,currency,availability\n"
ITEMS = ("full-a", "full-b", "full-c")
UPDATES = "persona_catalog_updates_total"
UNVERIFIED = "persona_catalog_kept_unverified_total"


def _rows(items: tuple[str, ...]) -> str:
    return HEADER + "".join(
        f"{item},Thing {n},https://s.example.com/{n},https://s.example.com/{n}.jpg,{n + 1}.5,EUR,"
        "in_stock\n"
        for n, item in enumerate(items)
    )


def _availability(run: Running, secret: str) -> dict[str, str]:
    """item id -> availability, as the Google feed lists the catalog."""
    status, _, body = http("GET", run.base + "/v1/feeds/google.tsv", key=secret, timeout=30)
    assert status == 200, body
    rows = csv.DictReader(io.StringIO(body.decode()), delimiter="\t")
    return {row["id"]: row["availability"] for row in rows}


def test_full_import_after_a_restart_marks_the_kept_products_it_leaves_out(
    tmp_path: Path,
) -> None:
    data, env = tmp_path / "data", {"PERSONA_PARTITIONS": "2"}
    (tmp_path / "three.csv").write_text(_rows(ITEMS))
    (tmp_path / "one.csv").write_text(_rows(ITEMS[:1]))
    everything_in_stock = dict.fromkeys(ITEMS, "in_stock")
    with _running(data, tmp_path / "first.log", env) as run:
        out = _cli(data, "catalog", "import", str(tmp_path / "three.csv"),
                   "--broker", _broker_url(tmp_path / "first.log"))  # fmt: skip
        assert "catalog import: 3" in out
        secret = _secret(data)
        wait_until(lambda: _availability(run, secret) == everything_in_stock, 60, what="3 items")

    with _running(data, tmp_path / "second.log", env) as run:
        assert _availability(run, secret) == everything_in_stock  # kept in the data dir
        out = _cli(data, "catalog", "import", str(tmp_path / "one.csv"), "--full",
                   "--broker", _broker_url(tmp_path / "second.log"))  # fmt: skip
        assert "2 missing products marked out of stock" in out, out
        expected = {"full-a": "in_stock", "full-b": "out_of_stock", "full-c": "out_of_stock"}
        wait_until(lambda: _availability(run, secret) == expected, 60, what="2 marked out")
        # the republished products (before these in each partition) were passed over: their kept
        # marks verified with the secret the worker was given; applied were the import's record
        # and the two marks out of stock
        wait_until(lambda: metric(run.worker, UPDATES) >= 3, 30, what="3 updates")
        assert metric(run.worker, UPDATES) == 3 and metric(run.worker, UNVERIFIED) == 0
