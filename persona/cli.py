"""The `persona` command line: run, worker, replay, catalog import, models."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from api.auth import InvalidKey
from engine.catalog import InvalidProduct
from engine.events import InvalidEvent
from engine.settings import Settings, SettingsError, load_settings
from persona.progress import Progress
from streams.admin import TopicMismatch

EPILOG_RUN = """examples:
  persona run --demo                      # embedded broker + worker + API with the demo data
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


def _require_broker(settings: Settings) -> str:
    if settings.broker_url is None:
        raise SettingsError(
            "no broker: pass --broker kafka://host:port or set PERSONA_BROKER_URL "
            "(`persona run` prints the URL of its embedded broker)"
        )
    return settings.broker_url


def _require_file(path: str) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(2, "No such file", path)


def cmd_run(args: argparse.Namespace) -> int:
    from persona.supervisor import run

    return run(_settings(args), demo=args.demo)


def cmd_worker(args: argparse.Namespace) -> int:
    from persona.worker import run_worker

    settings = _settings(args)
    run_worker(settings, _require_broker(settings))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from engine.sources import read_events

    settings = _settings(args)
    broker = _require_broker(settings)
    _require_file(args.file)
    sent = asyncio.run(replay(broker, settings.partitions, read_events(args.file), args.rate))
    return 0 if sent >= 0 else 1


async def replay(broker: str, partitions: int, events: Any, rate: float | None = None) -> int:
    from streams.produce import ALL_INPUTS, Producer, ensure_topics

    await ensure_topics(broker, partitions, ALL_INPUTS)
    progress = Progress("replay")
    async with Producer(broker) as producer:
        sent = await producer.send_events(events, rate=rate, progress=progress)
    progress.close(sent)
    return sent


async def import_catalog(broker: str, partitions: int, products: Any) -> int:
    from streams.produce import ALL_INPUTS, Producer, ensure_topics

    await ensure_topics(broker, partitions, ALL_INPUTS)
    progress = Progress("catalog import")
    async with Producer(broker) as producer:
        sent = await producer.send_products(products, progress=progress)
    progress.close(sent)
    return sent


def cmd_catalog_import(args: argparse.Namespace) -> int:
    from engine.sources import read_catalog

    settings = _settings(args)
    broker = _require_broker(settings)
    _require_file(args.file)
    asyncio.run(import_catalog(broker, settings.partitions, read_catalog(args.file)))
    return 0


def cmd_models_train(args: argparse.Namespace) -> int:
    from models.train import train_all

    summary = train_all(Path(args.events), Path(args.out), horizon_days=args.horizon_days)
    for name, info in summary.items():
        print(f"{name}: {info}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persona", description="Persona: real-time personalization engine for online shops"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, http: bool = True, data: bool = True) -> None:
        p.add_argument("--broker", help="kafka://host:port (unset: embedded broker for `run`)")
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
    run.set_defaults(func=cmd_run)

    worker = sub.add_parser(
        "worker",
        help="one more worker (stream + HTTP API) joining the consumer group",
        epilog="example:\n  persona worker --broker kafka://127.0.0.1:9092 --port 8081 "
        "--data-dir data2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(worker)
    worker.set_defaults(func=cmd_worker)

    replay_p = sub.add_parser(
        "replay",
        help="produce events from a file into the input topics",
        epilog="formats: the contract's JSON lines, UCI Online Retail CSV, REES46 CSV, OTTO "
        "JSONL (gzip or plain)\nexample:\n  persona replay orders.csv.gz --rate 2000 "
        "--broker kafka://127.0.0.1:9092",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay_p.add_argument("file")
    replay_p.add_argument(
        "--rate", type=float, help="events per second (default: as fast as possible)"
    )
    common(replay_p, http=False, data=False)
    replay_p.set_defaults(func=cmd_replay)

    catalog = sub.add_parser("catalog", help="product catalog tools")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    imp = catalog_sub.add_parser(
        "import",
        help="load a product feed (CSV/TSV/JSON lines) into the catalog topic",
        epilog="example:\n  persona catalog import products.csv --broker kafka://127.0.0.1:9092",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("file")
    common(imp, http=False, data=False)
    imp.set_defaults(func=cmd_catalog_import)

    models = sub.add_parser("models", help="train and manage models")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    train = models_sub.add_parser(
        "train",
        help="train the churn model and the recommender from an events file",
        epilog="example:\n  persona models train --events orders.csv.gz --out my-models",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--events", required=True, help="events file (any `replay` format)")
    train.add_argument("--out", default="models-out", help="directory for the artifacts")
    train.add_argument("--horizon-days", type=int, default=90, help="churn horizon (days)")
    train.set_defaults(func=cmd_models_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (SettingsError, InvalidKey, TopicMismatch) as exc:
        print(f"persona: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"persona: file not found: {exc.filename}", file=sys.stderr)
        return 2
    except KafkaError as exc:
        print(
            f"persona: broker error: {exc} (is the broker URL right and reachable?)",
            file=sys.stderr,
        )
        return 1
    except (InvalidEvent, InvalidProduct) as exc:
        print(f"persona: {exc.reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
