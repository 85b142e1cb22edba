"""The dashboard's figures of the whole engine (api/fleet.py): this process's point and totals
merged with the other processes' snapshots; the snapshots' check (engine/process_stats.py) and
the board's edge (streams/stats_board.py: signed snapshots only)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.fleet import latency_percentiles, merged_point, processes, totals
from api.observability import LATENCY_BUCKETS, make_point
from engine.process_stats import MAX_TEXT, BadSnapshot, clean, decode, process_label
from engine.signing import cluster_key
from streams.signed import RecordSigner
from streams.stats_board import STATS_TOPIC, StatsBoard

BOUNDS = list(LATENCY_BUCKETS)
SECRET = "fleet-test-cluster-secret-of-32-chars"


def snap(t: float, kind: str = "worker", **figures: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "process": f"{kind}:1", "kind": kind, "host": "h", "t": t, "started": 1.0,
        "ready": True, "ready_detail": "ok", "models": {"recs": "v1"},
        "stream": {"counters": {}, "consumed": {}, "lag": {}, "triggers": {}},
        "hits": 0, "misses": 0, "requests": 0, "blocks": 0, "fallbacks": 0,
        "latency": [0.0] * (len(BOUNDS) + 1), "variants": {},
        "churn": {"counts": [0] * 10, "sampled": 0, "sum": 0.0},
    }  # fmt: skip
    return clean({**base, **figures})


def test_alone_the_point_is_this_processs_own() -> None:
    own = make_point(snap(0), snap(1), [0.002])
    assert merged_point(own, (snap(0), snap(1)), [], 1.0, make_point, BOUNDS) is own


def test_a_peers_rates_add_to_this_processs_and_stop_when_it_goes_quiet() -> None:
    latency = [0.0] * (len(BOUNDS) + 1)
    latency[2] = 10.0  # ten requests between 1 and 2.5 ms
    answered = {"requests": 10, "hits": 8, "misses": 2, "latency": latency}
    reader = (snap(0, "reader"), snap(1, "reader", **answered))
    worker = (
        snap(0, stream={"consumed": {"cart": 0}, "lag": {"cart": 5}}),
        snap(2, stream={"consumed": {"cart": 40}, "lag": {"cart": 3}}, latency=latency),
    )
    own = make_point(*reader, [])
    point = merged_point(own, reader, [worker], 2.0, make_point, BOUNDS)
    assert point["events_per_s"] == {"cart": 20.0} and point["lag"] == {"cart": 3}
    assert point["requests_per_s"] == 10.0 and point["cache_hit_rate"] == 0.8
    assert 1.0 < point["latency_ms"]["p50"] < 2.5
    quiet = merged_point(own, reader, [worker], 60.0, make_point, BOUNDS)
    assert quiet["events_per_s"] == {"cart": 0} and quiet["lag"] == {"cart": 3}
    assert 1.0 < quiet["latency_ms"]["p50"] < 2.5  # this process's requests still count


def test_latency_percentiles_interpolate_within_a_bucket() -> None:
    assert latency_percentiles([0.0] * 4, [0.001, 0.002, 0.004]) == dict.fromkeys(
        ("p50", "p95", "p99")
    )
    found = latency_percentiles([0, 10, 0, 0], [0.001, 0.002, 0.004])
    assert found["p50"] == pytest.approx(1.5) and found["p99"] == pytest.approx(1.99)
    assert latency_percentiles([0, 0, 0, 3], [0.001, 0.002, 0.004])["p50"] == 4.0


def test_totals_add_the_processes_up_but_take_one_churn_sample() -> None:
    worker = snap(1, stream={"counters": {"events_processed": 7}, "triggers": {"cart": 1}})
    worker["churn"]["sampled"] = 5
    reader = snap(1, "reader", requests=3, blocks=2, fallbacks=1, variants={"winback:a": [2, 1]})
    reader["churn"]["sampled"] = 3
    found = totals([reader, worker])
    assert found["stream"]["counters"] == {"events_processed": 7}
    assert found["requests"] == 3 and found["blocks"] == 2 and found["fallbacks"] == 1
    assert found["variants"] == {"winback:a": [2, 1]} and found["churn"]["sampled"] == 5
    rows = processes(reader, [(None, worker)], 11.0)
    assert [(r["kind"], r["this"], r["age_s"], r["events"]) for r in rows] == [
        ("reader", True, 10.0, 0),
        ("worker", False, 10.0, 7),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "broker"},
        {"t": float("nan")},
        {"requests": -1},
        {"hits": "many"},
        {"stream": {"lag": {"x" * 300: 1}}},
        {"stream": {"consumed": {f"t{i}": 1 for i in range(201)}}},
        {"models": {"recs": 5}},
        {"process": None},
        {"label": 5},
        {"label": "x" * 201},
    ],
)
def test_a_snapshot_out_of_shape_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(BadSnapshot):
        clean({**snap(1), **bad})
    with pytest.raises(BadSnapshot):
        decode(b"[1, 2]")
    with pytest.raises(BadSnapshot):
        decode(b"{" * 70_000)


def test_the_board_folds_signed_snapshots_only() -> None:
    key = cluster_key(SECRET)
    assert key is not None
    signer = RecordSigner(key, "worker:x")
    board = StatsBoard("kafka://127.0.0.1:9", "reader:me", dict, signer)
    value = json.dumps(snap(100.0)).encode()

    def fold(k: bytes, v: bytes | None, signed: bool = True) -> None:
        headers = signer.headers(STATS_TOPIC, k, v) if signed else []
        board.fold(k, v, headers)

    fold(b"worker:1", value, signed=False)
    fold(b"worker:1", b"not json")
    fold(b"reader:me", value)  # its own: not a peer
    assert board.peers(101.0) == [] and board.refused == 1
    fold(b"worker:1", value)
    fold(b"worker:1", json.dumps(snap(102.0)).encode())
    ((previous, last),) = board.peers(103.0)
    assert previous is not None and (previous["t"], last["t"]) == (100.0, 102.0)
    assert board.peers(102.0 + 76) == []  # silent for longer than LIVE_FOR
    fold(b"worker:1", None)  # a tombstone: stopped
    assert board.snapshots == {}


def test_stale_triggers_of_every_worker_are_added_up_and_checked() -> None:
    """The triggers recorded but too old to send (streams/triggers.py) travel in the snapshot
    like the emitted ones (a peer's were dropped on the way in), and an older peer without them
    counts none."""
    one = snap(1, stream={"triggers_stale": {"abandoned_cart": 2}})
    two = snap(1, "worker", stream={"triggers_stale": {"abandoned_cart": 1, "churn_risk": 4}})
    older = snap(1, "reader", stream={"counters": {}})
    assert totals([one, two, older])["stream"]["triggers_stale"] == {
        "abandoned_cart": 3,
        "churn_risk": 4,
    }
    with pytest.raises(BadSnapshot):
        clean({**snap(1), "stream": {"triggers_stale": {"abandoned_cart": -1}}})


def test_processes_are_named_by_the_label_they_publish() -> None:
    """A reader's id on the board, `reader:http://127.0.0.1:8080:1:15995`, read as a second
    port on the dashboard: each process publishes a label (kind, number, pid, port) that the
    page shows; a process that predates it is named by its id."""
    assert process_label("reader", "http://127.0.0.1:8080", 15995, 1) == (
        "reader 1 (pid 15995) on :8080"
    )
    assert process_label("worker", "https://shop-2.internal:8443", 412) == (
        "worker (pid 412) on shop-2.internal:8443"
    )
    assert process_label("worker", "http://[::1]:8080", 7) == "worker (pid 7) on :8080"
    assert process_label("worker", "http://h:99999", 7) == "worker (pid 7) on http://h:99999"
    long = process_label("reader", "http://" + "a" * 300 + ":80", 1, 2)
    assert len(long) == MAX_TEXT and clean({**snap(1), "label": long})["label"] == long
    reader = snap(1, "reader", process="reader:http://127.0.0.1:8080:1:15995")
    reader = clean({**reader, "label": "reader 1 (pid 15995) on :8080"})
    older = snap(1, process="worker:http://127.0.0.1:8081")  # no label: predates it
    rows = processes(reader, [(None, older)], 2.0)
    assert [(r["process"], r["label"]) for r in rows] == [
        ("reader:http://127.0.0.1:8080:1:15995", "reader 1 (pid 15995) on :8080"),
        ("worker:http://127.0.0.1:8081", "worker:http://127.0.0.1:8081"),
    ]
