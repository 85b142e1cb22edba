"""The `persona` command line: run, worker, replay, catalog import, models."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from api.auth import InvalidKey
from engine.blocks import TemplateSetupError
from engine.catalog import InvalidProduct
from engine.events import Event, InvalidEvent
from engine.files import require_regular
from engine.settings import Settings, SettingsError, load_settings
from persona.loading import import_catalog as import_catalog  # re-exported
from persona.loading import replay as replay  # re-exported
from persona.models_cli import add_models_parser
from persona.progress import Progress
from streams.admin import TopicMismatch
from streams.kafka_security import Broker, KafkaClientConfig, client_config
from streams.produce import SendFailed

EPILOG_MAIN = """examples:
  persona run --demo                      # everything, with the demo data (what `make run` does)
  persona replay events.jsonl --broker kafka://127.0.0.1:9092
  persona models --help                   # train, evaluate, publish, activate, roll back
each command has --help with examples; settings: flags, PERSONA_* variables, PERSONA_CONFIG (TOML)
"""

EPILOG_RUN = """examples:
  persona run --demo                      # embedded broker + worker + API with the demo data
  persona run --fresh                     # the embedded broker from empty state (else it is kept)
  persona run --broker kafka://k1:9092    # against your Kafka cluster
"""


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    flags = {
        "broker_url": getattr(args, "broker", None),
        "data_dir": getattr(args, "data_dir", None),
        "http_host": getattr(args, "host", None),
        "http_port": getattr(args, "port", None),
        **extra,
    }
    return load_settings(flags)


MIN_RATE, MAX_RATE = 0.001, 10_000_000.0  # events per second `persona replay --rate` takes


def _rate(text: str) -> float:
    """--rate: a number of events per second in MIN_RATE..MAX_RATE (argparse says which flag).
    float() also takes 'nan', 'inf', 0 and negatives: paced by none of them, and 1e-300 slept
    for ever."""
    try:
        rate = float(text)
    except ValueError:
        rate = float("nan")
    if not MIN_RATE <= rate <= MAX_RATE:  # nan fails too
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of events per second in {MIN_RATE:g}..{MAX_RATE:g}"
        )
    return rate


def _require_broker(settings: Settings) -> KafkaClientConfig:
    """The configured cluster with its security (PERSONA_KAFKA_*), checked for TLS."""
    if settings.broker_url is None:
        raise SettingsError(
            "no broker: pass --broker kafka://host:port or set PERSONA_BROKER_URL "
            "(`persona run` prints the URL of its embedded broker)"
        )
    return client_config(settings, settings.broker_url)


def _require_file(path: str) -> None:
    """A regular file (through symbolic links): a directory, a FIFO or a device such as
    /dev/zero is refused before it is opened (one blocks, the other never ends), a symbolic
    link loop said to be one (engine.files.require_regular)."""
    require_regular(path)


PRIVATE_UMASK = 0o077


def _private_files() -> None:
    """What the long-running processes create (tables, registry copy, model cache, the readers'
    secondaries, logs) is theirs alone, whatever umask they were started with: the data dir is
    0700, but a data dir loosened later must expose nothing (children inherit the mask)."""
    os.umask(PRIVATE_UMASK)


def cmd_run(args: argparse.Namespace) -> int:
    from persona.supervisor import run

    _private_files()
    settings = _settings(args)
    if settings.embedded and settings.kafka_security != "plaintext":
        raise SettingsError(
            f"PERSONA_KAFKA_SECURITY={settings.kafka_security} needs PERSONA_BROKER_URL (or "
            "--broker): the embedded broker speaks plaintext on loopback only"
        )
    if args.fresh and not settings.embedded:
        raise SettingsError(
            "--fresh starts the embedded broker's state over; with a broker URL the Kafka "
            "changelogs are the state: nothing to start over here (reset the topics instead)"
        )
    if not settings.embedded:
        _require_broker(settings)  # a wrong CA or TLS port: one message, before any child
    code = run(settings, demo=args.demo, fresh=args.fresh)
    # Every child is stopped and every file written: the interpreter's teardown of what this
    # process imported (~1 s of CPU, measured 3-4 s on a busy 2-core machine) would only delay
    # the exit the stop contract (10 s) counts.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_worker(args: argparse.Namespace) -> int:
    from persona.supervisor import check_listen
    from persona.worker import run_worker

    _private_files()
    settings = _settings(args)
    broker = _require_broker(settings)
    check_listen(settings.http_host, settings.http_port)  # a taken port: one line, no traceback
    run_worker(settings, broker)
    return 0


def cmd_reader(args: argparse.Namespace) -> int:
    from persona.reader import run_reader

    _private_files()
    settings = _settings(args)
    run_reader(settings, _require_broker(settings), args.index)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Exit 0: replayed; 1: a bad line (the events before it sent) or a broker error (part way:
    how many events it acknowledged before, said); 2: a usage error, or a file of no event
    (empty, blank lines, a header alone, only skipped rows: it sent 0 events and exited 0 without
    a word), said naming the file before the broker is asked."""
    from engine.sources import ReadStats, read_events
    from persona.models_cli import what_was_read

    settings = _settings(args)
    broker = _require_broker(settings)
    _require_file(args.file)
    try:
        read = [0]
        stats = ReadStats()
        # a file of no known format, or of no event: said before the broker is asked
        events = read_events(args.file, stats=stats)
        first = next(events, None)
        if first is None:
            said = what_was_read(args.file, stats)
            raise SettingsError(f"{args.file}: no events to replay ({said})")
        # read[0]: events handed to the producer; those before a bad line are sent

        def counted(events: Iterator[Event]) -> Iterator[Event]:
            for event in events:
                read[0] += 1
                yield event

        events = counted(itertools.chain([first], events))
        sent = asyncio.run(replay(broker, settings.partitions, events, args.rate))
    except InvalidEvent as exc:  # "line 7: ...": which file's, and what went before it
        before = (
            f"the {read[0]:,} events before it were sent, nothing after"
            if read[0]
            else "nothing was sent"
        )
        raise InvalidEvent(f"{args.file}: {exc.reason}; {before}") from None
    except SendFailed as exc:  # part way: what the broker took, as for a bad line
        print(
            f"persona: {args.file}: broker error: {exc}; {exc.acknowledged:,} events were sent "
            "(acknowledged) before the error",
            file=sys.stderr,
        )
        return 1
    return 0 if sent >= 0 else 1


def cmd_catalog_import(args: argparse.Namespace) -> int:
    """Exit 0: imported, no row rejected; 1: rows rejected (the valid ones imported), the feed
    unreadable or without products, a broker error (part way: how many products it acknowledged
    before, said); 2: a usage error (file, URL scheme, map file)."""
    import aiohttp

    from engine.catalog_formats import InvalidFeed, load_map
    from persona.catalog_sync import FeedFetchError, scrubbed

    settings = _settings(args)
    broker = _require_broker(settings)
    remote = args.file.startswith(("http://", "https://"))
    if "://" in args.file and not remote:
        raise SettingsError(f"{args.file.split('://')[0]}:// feeds are not fetched: http(s) only")
    if not remote:
        _require_file(args.file)
    try:
        mapping = load_map(args.map) if args.map else None
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    try:
        return asyncio.run(_catalog_import(args, broker, settings.partitions, mapping, remote))
    except InvalidFeed as exc:
        # the products produced before it (batches of persona.catalog_sync.READ_BATCH), told
        lost = (
            f"{exc.imported:,} products before it were imported, nothing after"
            if exc.imported
            else "nothing was imported"
        )
        print(f"persona: {args.file}: {exc}; {lost}", file=sys.stderr)
        return 1
    except SendFailed as exc:  # part way: what the broker took (a resumed import sends it again)
        print(
            f"persona: {args.file}: broker error: {exc}; {exc.acknowledged:,} products were "
            "imported (acknowledged) before the error",
            file=sys.stderr,
        )
        return 1
    except (FeedFetchError, aiohttp.ClientError, TimeoutError) as exc:
        reason = scrubbed(str(exc)) or type(exc).__name__  # InvalidURL's is the URL
        print(f"persona: cannot fetch the feed: {reason}; nothing imported", file=sys.stderr)
        return 1


class _Row(Exception):
    """A row past the header (`_holds_rows` reads no further)."""


def _holds_rows(path: Path, fmt: str, mapping: dict[str, str] | None) -> bool:
    """Whether the feed holds a row past its header (a product, or a row to reject), read up to
    the first one: a feed of nothing (0 bytes, blank lines, a header alone) is told before the
    broker is asked (it was asked for its topics first, and a broker away was all a user heard).
    InvalidFeed for a feed no format reads (empty, binary, a bad header), as the import says."""
    from engine.catalog_formats import open_binary, read_products

    def row(line: int, reason: str) -> None:
        raise _Row

    with open_binary(path) as source:
        try:
            return next(read_products(source, fmt, mapping, row, lambda _: None), None) is not None
        except _Row:
            return True


async def _catalog_import(
    args: argparse.Namespace,
    broker: Broker,
    partitions: int,
    mapping: dict[str, str] | None,
    remote: bool,
) -> int:
    import tempfile

    from persona.catalog_sync import ImportResult, download, import_feed

    def reject(line: int, reason: str) -> None:
        print(f"persona: line {line} rejected: {reason}", file=sys.stderr)

    def warn(message: str) -> None:
        print(f"persona: warning: {message}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="persona-feed-") as tmp:
        path = Path(args.file)
        if remote:
            path = Path(tmp) / "feed"
            await download(args.file, path)
        if not _holds_rows(path, args.format, mapping):  # told before the broker is asked
            result = ImportResult()
        else:
            progress = Progress("catalog import")
            result = await import_feed(
                broker, partitions, path, args.format, mapping, args.full, reject, progress, warn
            )
            progress.close(result.sent)
    if not result.sent and not result.rejected:  # a header alone: not "0 products imported"
        print(
            f"persona: {args.file}: the feed holds no products (a header alone?); nothing was "
            "imported" + (", nothing marked out of stock" if args.full else ""),
            file=sys.stderr,
        )
        return 1
    print(
        f"persona: catalog import: {result.sent} products, {result.rejected} rows rejected"
        + (f", {result.marked_out} missing products marked out of stock" if args.full else ""),
        file=sys.stderr,
    )
    return 1 if result.rejected else 0


def cmd_backup(args: argparse.Namespace) -> int:
    from persona.backup import backup

    data_dir = _settings(args).data_dir
    manifest = backup(data_dir, Path(args.dir))
    print(
        f"persona: backed up {data_dir} into {args.dir}: {manifest['rows']} rows in "
        f"{len(manifest['tables'])} table partitions, {manifest['registry_records']} model "
        f"registry records, {', '.join(manifest['kept_files']) or 'no other file'} (0600); "
        f"{len(manifest['files'])} files listed with their SHA-256 in "
        f"{Path(args.dir) / 'manifest.json'} (the backup holds personal data and secrets: keep "
        "it as private as the data dir)"
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from persona.backup import restore

    settings = _settings(args)
    data_dir = settings.data_dir
    manifest = restore(Path(args.dir), data_dir, settings.partitions)
    print(
        f"persona: restored the backup of {manifest.get('created')} ({manifest['rows']} rows, "
        f"{manifest['registry_records']} model registry records) into {data_dir}; start it "
        f"with `persona run --data-dir {data_dir}`"
    )
    return 0


def _add_backup_parsers(sub: Any) -> None:
    backup = sub.add_parser(
        "backup",
        help="a consistent copy of the state (tables, model registry) into a new directory",
        epilog="works while `persona run` is running, or stopped\nexample:\n  persona backup "
        "/backups/persona-2026-12-03 --data-dir data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    backup.add_argument("dir", help="the backup directory: new or empty (created 0700)")
    backup.add_argument("--data-dir", help="state directory (default ./data)")
    backup.set_defaults(func=cmd_backup)
    restore = sub.add_parser(
        "restore",
        help="bring a backup back into an empty data dir (verified first)",
        epilog="example:\n  persona restore /backups/persona-2026-12-03 --data-dir data\n"
        "  persona run --data-dir data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    restore.add_argument("dir", help="a directory written by `persona backup`")
    restore.add_argument("--data-dir", help="the data dir to fill: new or empty (default ./data)")
    restore.set_defaults(func=cmd_restore)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persona",
        description="Persona: real-time personalization engine for online shops",
        epilog=EPILOG_MAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, http: bool = True, data: bool = True) -> None:
        p.add_argument(
            "--broker",
            help="kafka://host:port (or PERSONA_BROKER_URL; `persona run` starts an embedded "
            "broker without one and prints its address for the other commands)",
        )
        if http:
            p.add_argument("--host", help="HTTP host (default 127.0.0.1)")
            p.add_argument("--port", type=int, help="HTTP port (default 8080)")
        if data:
            p.add_argument("--data-dir", help="state directory (default ./data)")

    run = sub.add_parser(
        "run",
        help="the whole engine",
        epilog=EPILOG_RUN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(run)
    run.add_argument(
        "--demo",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="load the bundled demo catalog and orders, then print example URLs",
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        help="embedded broker only: start from empty state on purpose (removes the kept tables, "
        "model registry and model cache; keeps the local API key and audit.log)",
    )
    run.set_defaults(func=cmd_run)

    worker = sub.add_parser(
        "worker",
        help="one more worker (stream + HTTP API) joining the consumer group",
        epilog="each worker needs a data dir of its own (one held by a `persona run` or another "
        "worker is refused)\nexample:\n  persona worker --broker kafka://127.0.0.1:9092 "
        "--port 8081 --data-dir data2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(worker)
    worker.set_defaults(func=cmd_worker)

    reader = sub.add_parser(
        "reader",
        help="a read-only API process over a worker's tables (`persona run` starts these)",
        epilog="example:\n  persona reader --broker kafka://127.0.0.1:9092 --data-dir data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(reader)
    reader.add_argument("--index", type=int, default=0, help="reader number (default 0)")
    reader.set_defaults(func=cmd_reader)

    replay_p = sub.add_parser(
        "replay",
        help="produce events from a file into the input topics",
        epilog="formats: the contract's JSON lines, UCI Online Retail CSV, REES46 CSV, OTTO "
        "JSONL (gzip or plain)\nexit status: 0 replayed, 1 a bad line (the events before it "
        "sent) or a broker error, 2 usage or a file of no event\nexample:\n  persona replay "
        "orders.csv.gz --rate 2000 "
        "--broker kafka://127.0.0.1:9092",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay_p.add_argument("file")
    replay_p.add_argument(
        "--rate", type=_rate, help="events per second (default: as fast as possible)"
    )
    common(replay_p, http=False, data=False)
    replay_p.set_defaults(func=cmd_replay)

    catalog = sub.add_parser(
        "catalog",
        help="product catalog tools",
        epilog="example:\n  persona catalog import products.csv --broker kafka://127.0.0.1:9092",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    imp = catalog_sub.add_parser(
        "import",
        help="load a product feed (file or http(s) URL) into the catalog topic",
        epilog="formats: JSON lines, CSV, TSV (Persona's or Google Merchant Center's column "
        "names), Google Merchant Center XML (RSS or Atom); gzip or plain\nexit status: 0 "
        "imported, 1 rows rejected (each printed with its line; the others imported), an "
        "unreadable feed or one without products, 2 usage\nexamples:\n  persona catalog import "
        "products.csv --broker kafka://127.0.0.1:9092\n  persona catalog import "
        "https://shop.example.com/feed.xml --full\n  persona catalog import export.csv --map "
        "columns.json   # "
        '{"SKU": "id", "Name": "title", ...}',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("file", help="a feed file, or an http(s) URL (fetched: at most 2 GiB, 10 min)")
    imp.add_argument(
        "--format",
        default="auto",
        choices=("auto", "jsonl", "csv", "tsv", "google-xml"),
        help="the feed's format (default: told from its first bytes)",
    )
    imp.add_argument(
        "--map", help="a JSON file mapping the feed's column names to Persona's or Google's"
    )
    imp.add_argument(
        "--full",
        action="store_true",
        help="a full sync: products of the catalog missing from the feed are marked out of "
        "stock (never deleted)",
    )
    common(imp, http=False, data=False)
    imp.set_defaults(func=cmd_catalog_import)

    add_models_parser(sub)
    _add_backup_parsers(sub)
    return parser


def _lost_connection_futures(record: logging.LogRecord) -> bool:
    """Drop asyncio's "Future exception was never retrieved" for a connection error: the Kafka
    client leaves such futures behind when a broker resets its connections (a plaintext client
    on a TLS listener), and whether the garbage collector finds one before the CLI exits varies
    with anything that moves its timing; the CLI has said what happened ("broker error: ..."),
    a traceback after it only alarms. Every other asyncio record passes."""
    if not str(record.msg).startswith("Future exception was never retrieved"):
        return True
    error = record.exc_info[1] if record.exc_info else None
    return not isinstance(error, ConnectionError)


# The commands that are services: their logs are logs (Faust's for a worker; a reader sets its
# own levels), not a terminal's output. The others are tools a user runs and reads.
SERVICES = frozenset({"worker", "reader"})
QUIET_LIBRARIES = ("aiokafka",)  # their INFO lines are noise among a tool's output


# The commands whose every broker error is said by Persona's own message (main's KafkaError):
# aiokafka's ERROR line ("Unable connect to ...") before it said the same thing less clearly.
OWN_BROKER_ERRORS = frozenset({"models"})


def quiet_libraries(log_level: str, command: str = "") -> None:
    """A tool's terminal shows Persona's own messages and the libraries' warnings and errors:
    aiokafka's INFO lines ("Updating subscribed topics to: ...") came in between; under
    `OWN_BROKER_ERRORS` commands, its errors too. With PERSONA_LOG_LEVEL=debug (verbose) the
    libraries say everything."""
    level = logging.WARNING if command not in OWN_BROKER_ERRORS else logging.CRITICAL
    if log_level == "debug":
        level = logging.DEBUG
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(level)


def _log_level() -> str:
    """PERSONA_LOG_LEVEL (from the environment or PERSONA_CONFIG); "info" when the settings do
    not load (the command says why when it loads them)."""
    try:
        return load_settings().log_level
    except (SettingsError, OSError):
        return "info"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("asyncio").addFilter(_lost_connection_futures)
    if args.command not in SERVICES:
        quiet_libraries(_log_level(), args.command)
    try:
        return int(args.func(args) or 0)
    except (SettingsError, InvalidKey, TopicMismatch, TemplateSetupError) as exc:
        print(f"persona: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"persona: file not found: {exc.filename}", file=sys.stderr)
        return 2
    except KafkaError as exc:
        print(
            f"persona: broker error: {exc} (is the broker URL right and reachable, and do "
            "PERSONA_KAFKA_SECURITY and its credentials match the cluster's listener?)",
            file=sys.stderr,
        )
        return 1
    except (InvalidEvent, InvalidProduct) as exc:
        print(f"persona: {exc.reason}", file=sys.stderr)
        return 1
    except OSError as exc:  # the file system said no: a path through a file, read-only, full
        where = f": {exc.filename}" if exc.filename else ""
        print(f"persona: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
