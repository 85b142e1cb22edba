"""One scheduled retraining run, in a child process of the worker (persona/retrain.py starts it).

python -m persona.retrain_job --broker URL [--data-dir D] [--active NAME=DIR ...] [--signer S]

Niced, it reads the events the engine has seen (streams/history.py), retrains every model
(models/retrain.py: the new version and the active one evaluated on the held-out window), and
registers each new version inactive, its evaluation in its metrics, signed with the cluster
secret. The active versions come from `--active` (the worker's cached artifacts), the shipped
defaults otherwise. Its last line on stdout is one JSON object: {"events", "models": [{"name",
"version" or "skipped", "retrain"}]}, or {"error"} with exit status 1. Promotion is the worker's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.settings import load_settings, require_cluster_secret
from engine.signing import ClusterKey
from models.bundle import load_model, read_bundle, save_model
from models.registry import ModelSet
from models.retrain import RETRAIN, Retrained, retrain_all
from streams.history import read_history
from streams.kafka_security import KafkaClientConfig, client_config
from streams.registry import publish
from streams.signed import RecordSigner

NICE = 10  # below the worker and the broker it shares the machine with


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m persona.retrain_job")
    parser.add_argument("--broker", required=True, help="kafka://host:port")
    parser.add_argument("--data-dir")
    parser.add_argument("--active", action="append", default=[], help="NAME=DIR of a version")
    parser.add_argument("--signer", default="retrain", help="who signs the registry records")
    return parser


def active_models(pairs: list[str]) -> dict[str, Any]:
    """{name: scorer} of the active versions: `NAME=DIR` artifacts, else the shipped defaults."""
    shipped = ModelSet.default()
    models: dict[str, Any] = {"recs": shipped.recs, "churn": shipped.churn}
    for pair in pairs:
        name, _, directory = pair.partition("=")
        model = load_model(Path(directory))
        if model.name != name:
            raise ValueError(f"--active {pair}: the artifact is a {model.name} model")
        models[name] = model
    return models


def _register(broker: KafkaClientConfig, result: Retrained, signer: RecordSigner) -> dict[str, Any]:
    row: dict[str, Any] = {"name": result.name}
    if result.model is None:
        return {**row, "skipped": result.skipped}
    with tempfile.TemporaryDirectory() as tmp:
        save_model(result.model, Path(tmp) / result.name)
        asyncio.run(publish(broker, read_bundle(Path(tmp) / result.name), signer))
    return {**row, "version": result.model.version, RETRAIN: result.model.metrics[RETRAIN]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings({"broker_url": args.broker, "data_dir": args.data_dir})
    assert settings.broker_url is not None  # --broker is required
    broker = client_config(settings, settings.broker_url)
    key = ClusterKey(require_cluster_secret(settings))
    active = active_models(args.active)
    events = asyncio.run(read_history(broker, key, settings.partitions))
    print(f"retrain: {len(events)} events read", file=sys.stderr, flush=True)
    results = retrain_all(events, active, int(time.time() * 1000))
    signer = RecordSigner(key, args.signer)
    return {"events": len(events), "models": [_register(broker, r, signer) for r in results]}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with contextlib.suppress(OSError):
        os.nice(NICE)
    try:
        result = run(args)
    except Exception as exc:  # reported to the worker, which counts the run as failed
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:1000]}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
