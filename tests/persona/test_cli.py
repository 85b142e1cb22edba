"""The loading tools against a real worker: `persona catalog import` and `persona replay`."""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.broker import EmbeddedBroker
from tests.conftest import ROOT, T0, Worker, http, wait_until


def persona(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "persona", *args],
        cwd=ROOT,
        env=dict(os.environ, PERSONA_PARTITIONS="4", **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.integration
def test_catalog_import_and_replay_twice(worker: Worker, tmp_path: Path) -> None:
    feed = tmp_path / "feed.csv"
    feed.write_text(
        "item_id,title,url,image_url,price,currency,availability,category,brand\n"
        "cli-1,Lamp,https://s.example.com/1,https://s.example.com/1.jpg,9.5,EUR,in_stock,Light,Acme\n"
        "cli-2,Vase,https://s.example.com/2,https://s.example.com/2.jpg,4,EUR,out_of_stock,Home,\n"
    )
    result = persona("catalog", "import", str(feed), "--broker", worker.broker_url)
    assert result.returncode == 0, result.stderr
    assert "catalog import: 2" in result.stderr

    events = tmp_path / "events.jsonl.gz"
    with gzip.open(events, "wt") as fh:
        for i in range(50):
            fh.write(
                json.dumps(
                    {
                        "event_id": f"cli-{i}",
                        "type": "product_view",
                        "user_id": "cli-user",
                        "ts": T0 + i,
                        "item_id": "cli-1",
                    }
                )
                + "\n"
            )
    for _ in range(2):  # the second replay repeats every event_id: nothing changes
        result = persona("replay", str(events), "--rate", "500", "--broker", worker.broker_url)
        assert result.returncode == 0, result.stderr
        assert "replay: 50" in result.stderr

    # A sentinel after both replays: same user, same partition, so once it is folded every
    # repeated event before it has been seen (and ignored).
    sentinel = tmp_path / "sentinel.jsonl"
    sentinel.write_text(
        json.dumps(
            {
                "event_id": "cli-end",
                "type": "page_view",
                "user_id": "cli-user",
                "ts": T0 + 1_000,
            }
        )
        + "\n"
    )
    assert persona("replay", str(sentinel), "--broker", worker.broker_url).returncode == 0

    def profile_after_sentinel() -> dict | None:
        status, _, body = http("GET", f"{worker.base}/v1/users/cli-user/profile")
        p = json.loads(body) if status == 200 else None
        return p if p and "page_view" in p["events"] else None

    profile = wait_until(profile_after_sentinel, what="the sentinel event")
    del profile["events"]["page_view"]
    assert profile["events"] == {"product_view": 50}
    assert profile["affinities"]["categories"] == {"Light": 50.0}


def test_commands_explain_bad_input(tmp_path: Path) -> None:
    result = persona("replay", str(tmp_path / "missing.jsonl"), "--broker", "kafka://127.0.0.1:1")
    assert result.returncode == 2 and "file not found" in result.stderr
    result = persona("replay", "x.jsonl")
    assert result.returncode == 2 and "--broker" in result.stderr
    result = persona("--help")
    assert result.returncode == 0 and "replay" in result.stdout


def test_models_train_writes_loadable_artifacts(tmp_path: Path) -> None:
    from models.registry import ModelSet

    events = tmp_path / "events.jsonl"
    day = 86_400_000
    lines = []
    for u in range(60):
        for k in range(4 if u % 3 else 1):
            ts = 1_600_000_000_000 + (u % 7) * day + k * 30 * day
            for item in (f"i{(u + k) % 9}", f"i{(u + k + 1) % 9}"):
                lines.append(
                    {
                        "event_id": f"{u}-{k}-{item}",
                        "type": "purchase",
                        "user_id": f"u{u}",
                        "ts": ts,
                        "item_id": item,
                        "price": 3.0,
                        "props": {"order_id": f"{u}-{k}"},
                    }
                )
    events.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    result = persona(
        "models",
        "train",
        "--events",
        str(events),
        "--out",
        str(tmp_path / "m"),
        "--horizon-days",
        "30",
    )
    assert result.returncode == 0, result.stderr
    models = ModelSet.from_dir(tmp_path / "m")
    assert set(models.versions()) == {"churn", "recs"}
    assert models.recs.recommend([("i1", 0)], exclude=set(), k=3)


def test_replay_of_a_hostile_file_is_one_line_and_no_traceback(tmp_path: Path) -> None:
    """Refused before any broker is asked (the URL here answers nothing): a directory, a FIFO,
    /dev/zero, binary garbage, a 10 GiB sparse file, a file of no known format."""
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(255, -1, -1)) * 100)
    sparse = tmp_path / "sparse.jsonl"
    with sparse.open("wb") as out:
        out.truncate(10 << 30)
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    cases = {
        tmp_path: "is not a regular file",
        fifo: "is not a regular file",
        Path("/dev/zero"): "is not a regular file",
        garbage: "not UTF-8 text",
        sparse: "longer than",
        passwd: "unknown event file format",
    }
    for path, message in cases.items():
        result = persona("replay", str(path), "--broker", "kafka://127.0.0.1:1", timeout=60)
        assert result.returncode in (1, 2), (path, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (path, result)


def test_catalog_import_of_what_is_no_regular_file_is_refused_at_once(tmp_path: Path) -> None:
    """A FIFO (no writer: its open blocked for ever), a directory, /dev/zero and /dev/urandom
    (never ending) and /dev/null: one line naming the path, exit 2, before the broker (which
    answers nothing here) is asked. `-` is no stdin: there is no such file."""
    fifo = tmp_path / "feed.csv"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path, "/dev/zero", "/dev/urandom", "/dev/null"):
        result = persona("catalog", "import", str(path), "--broker", "kafka://127.0.0.1:1")
        assert result.returncode == 2, (path, result.stderr)
        assert f"{path} is not a regular file" in result.stderr, (path, result.stderr)
        assert "Traceback" not in result.stderr
    result = persona("catalog", "import", "-", "--broker", "kafka://127.0.0.1:1")
    assert result.returncode == 2 and "file not found: -" in result.stderr, result.stderr


def test_replay_refuses_a_rate_it_cannot_pace_by(tmp_path: Path) -> None:
    """nan, inf, 0 and negatives were taken and paced nothing; 1e-300 slept for ever."""
    events = tmp_path / "e.jsonl"
    events.write_text("")
    for rate in ("nan", "inf", "0", "-5", "1e-300", "fast"):
        result = persona(
            "replay", str(events), f"--rate={rate}", "--broker", "kafka://127.0.0.1:1", timeout=30
        )
        assert result.returncode == 2 and "--rate" in result.stderr, (rate, result.stderr)


@pytest.mark.integration
def test_the_tools_print_no_library_info_lines_unless_asked_to(broker: Any) -> None:
    """`persona models list` (as `models train`, `models report`: the tools that read a topic)
    printed aiokafka's INFO lines ("Updating subscribed topics to: ...") among its own output.
    A tool prints its own messages; the Kafka client's warnings and errors still show, and
    PERSONA_LOG_LEVEL=debug shows everything."""
    secret = {"PERSONA_CLUSTER_SECRET": "cli-cluster-secret-" + "k" * 24}
    result = persona("models", "list", "--broker", broker.url, env=secret)
    assert result.returncode == 0, result.stderr
    assert "recs" in result.stdout
    assert "aiokafka" not in result.stderr and " INFO " not in result.stderr, result.stderr
    verbose = persona(
        "models", "list", "--broker", broker.url, env={**secret, "PERSONA_LOG_LEVEL": "debug"}
    )
    assert verbose.returncode == 0 and "aiokafka" in verbose.stderr


def test_the_quieted_libraries_keep_their_warnings_and_errors() -> None:
    from persona.cli import quiet_libraries

    client = logging.getLogger("aiokafka.consumer.group_coordinator")
    try:
        quiet_libraries("info")
        assert client.isEnabledFor(logging.WARNING) and not client.isEnabledFor(logging.INFO)
        quiet_libraries("debug")
        assert client.isEnabledFor(logging.DEBUG)
    finally:
        logging.getLogger("aiokafka").setLevel(logging.NOTSET)


@pytest.mark.integration
def test_a_feed_refused_at_its_first_line_says_nothing_was_imported(
    broker: Any, tmp_path: Path
) -> None:
    """An empty feed is refused at line 1: the message said "nothing after it was imported",
    which reads as if something before it had been."""
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = persona("catalog", "import", str(empty), "--broker", broker.url)
    assert result.returncode == 1, result.stderr
    assert "line 1:" in result.stderr and "nothing was imported" in result.stderr, result.stderr
    assert "nothing after it" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.integration
def test_a_feed_cut_short_after_products_were_imported_says_how_many(
    broker: Any, tmp_path: Path
) -> None:
    """A gzip feed whose stream breaks after thousands of rows (a download cut short, a file
    still being written): the products before the break were produced, but the message said
    "nothing was imported" (the gzip layer's error has no line). It says how many were."""
    rows = "".join(
        f"cut-{i},Product {i},https://shop.example/p{i},https://shop.example/p{i}.jpg,9.99,EUR\n"
        for i in range(5000)
    )
    whole = gzip.compress(("item_id,title,url,image_url,price,currency\n" + rows).encode())
    feed = tmp_path / "feed.csv.gz"
    feed.write_bytes(whole[: len(whole) * 3 // 4])  # the last quarter never arrived
    result = persona("catalog", "import", str(feed), "--broker", broker.url)
    assert result.returncode == 1, result.stderr
    assert "damaged or cut short" in result.stderr, result.stderr
    assert "nothing was imported" not in result.stderr, result.stderr
    said = result.stderr.rsplit("products before it were imported", 1)[0].split()[-1]
    assert 1000 <= int(said.replace(",", "")) < 5000, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
@pytest.mark.parametrize(
    "text",
    ["item_id,title,url,image_url,price,currency\n", "item_id,title\n\n\n", ""],
)
def test_a_feed_without_products_is_not_reported_as_imported(
    broker: Any, tmp_path: Path, text: str
) -> None:
    """A CSV feed holding its header alone was reported "catalog import: 0 products, 0 rows
    rejected" with exit 0, as if the shop's catalog had been imported. It says the feed holds no
    products and exits 1 (the feed unusable, nothing imported); an empty file is refused too."""
    feed = tmp_path / "feed.csv"
    feed.write_text(text)
    result = persona("catalog", "import", str(feed), "--broker", broker.url)
    assert result.returncode == 1, result.stderr
    assert "nothing was imported" in result.stderr, result.stderr
    assert "0 products, 0 rows rejected" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_a_replay_stopped_by_a_bad_line_says_how_many_events_were_sent(tmp_path: Path) -> None:
    """A replay stops at its first bad line, the events before it sent; the message named the
    line but not how many events had gone (a shop replaying a large file could not tell where to
    resume). It says so, as `catalog import` does for products. A broker of its own: the session
    worker would fold these events, and their event time moves its partitions' stream time past
    the other tests' events (refused as late)."""
    events = [
        {"event_id": f"sent-{i}-{tmp_path.name}", "type": "page_view", "user_id": "u1", "ts": i}
        for i in range(1_700_000_000_000, 1_700_000_000_003)
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + '{"type": "oops"}\n')
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as own:
        result = persona("replay", str(path), "--broker", own.url)
    assert result.returncode == 1, result.stderr
    assert f"{path}: line 4:" in result.stderr, result.stderr
    assert "the 3 events before it were sent, nothing after" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_a_replay_stopped_by_a_broker_error_says_how_many_events_were_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replay the broker fails part way (here: the broker goes away after the first
    `PENDING_MAX` events, which `send_events` waits to be acknowledged before it hands on) said
    "broker error: ..." and nothing of what had gone: a shop replaying a large file could not tell
    where to resume. It says how many events the broker acknowledged before the error, exit 1.
    The real reader, producer and broker; the broker is stopped between two events read (in
    process, so the point is exact). A broker of its own."""
    from engine import sources
    from persona.cli import main
    from streams.produce import PENDING_MAX

    total = PENDING_MAX + 3
    events = [
        {
            "event_id": f"ack-{i}-{tmp_path.name}",
            "type": "page_view",
            "user_id": f"u{i}",
            "ts": T0 + i,
        }
        for i in range(total)
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    real = sources.read_events
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as own:

        def read_events(*args: Any, **kwargs: Any) -> Any:
            for n, event in enumerate(real(*args, **kwargs)):
                if n == PENDING_MAX:  # the first PENDING_MAX acknowledged: the broker goes
                    own.stop()
                yield event

        monkeypatch.setattr(sources, "read_events", read_events)
        monkeypatch.setenv("PERSONA_PARTITIONS", "4")
        try:
            code = main(["replay", str(path), "--broker", own.url])
        finally:
            logging.getLogger("aiokafka").setLevel(logging.NOTSET)  # main quiets it
    said = capsys.readouterr().err
    assert code == 1, said
    assert "broker error" in said, said
    assert f"{PENDING_MAX:,} events were sent (acknowledged) before the error" in said, said
    assert "Traceback" not in said


@pytest.mark.integration
def test_a_catalog_import_stopped_by_a_broker_error_says_how_many_products_were_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the replay above, for `persona catalog import`: the broker goes away once the first
    batch (READ_BATCH products, acknowledged before the next is read) is in; it said "broker
    error: ..." alone. A broker of its own."""
    from persona import catalog_sync
    from persona.cli import main

    total = catalog_sync.READ_BATCH + 5
    rows = ["item_id,title,url,image_url,price,currency"] + [
        f"sku-{i},Mug {i},https://shop.test/p/{i},https://shop.test/i/{i}.jpg,9.5,EUR"
        for i in range(total)
    ]
    feed = tmp_path / "feed.csv"
    feed.write_text("\n".join(rows) + "\n")
    real = catalog_sync.read_products
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as own:

        def read_products(*args: Any, **kwargs: Any) -> Any:
            for n, product in enumerate(real(*args, **kwargs)):
                if n == catalog_sync.READ_BATCH:  # the first batch acknowledged: the broker goes
                    own.stop()
                yield product

        monkeypatch.setattr(catalog_sync, "read_products", read_products)
        monkeypatch.setenv("PERSONA_PARTITIONS", "4")
        try:
            code = main(["catalog", "import", str(feed), "--broker", own.url])
        finally:
            logging.getLogger("aiokafka").setLevel(logging.NOTSET)  # main quiets it
    said = capsys.readouterr().err
    assert code == 1, said
    assert "broker error" in said, said
    done = f"{catalog_sync.READ_BATCH:,} products were imported (acknowledged) before the error"
    assert done in said, said
    assert "Traceback" not in said


@pytest.mark.parametrize(
    "text",
    ["", "\n\n  \r\n\t\n", "item_id,title,url,image_url,price,currency\n", "item_id,title\n\n\n"],
    ids=["empty", "blank-lines", "header", "header-blank-lines"],
)
def test_a_feed_of_nothing_to_import_is_refused_before_the_broker_is_asked(
    tmp_path: Path, text: str
) -> None:
    """An empty feed (0 bytes, blank lines, a header alone) was found to hold nothing only after
    the broker was asked for its topics: with the broker away, the user heard of the broker, not
    of the feed. The file is read up to its first row first: the message is about the feed,
    exit 1, whatever the broker (here a closed port)."""
    from streams.broker import free_port

    feed = tmp_path / "feed.csv"
    feed.write_text(text)
    closed = f"kafka://127.0.0.1:{free_port()}"
    result = persona("catalog", "import", str(feed), "--broker", closed, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "nothing was imported" in result.stderr, result.stderr
    assert "broker" not in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.stderr
