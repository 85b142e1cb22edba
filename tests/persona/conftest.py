"""Shared by the `persona models` tests against a registry of their own broker: the CLI's
record signer, a fitted recs version published, and the count of the models topic's records."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from engine.signing import ClusterKey
from models.bundle import read_bundle, save_model
from models.recs import fit_recommender
from streams.broker import EmbeddedBroker
from streams.registry import MODELS_TOPIC, publish, read_messages
from streams.signed import RecordSigner
from tests.models.synthetic import basket_events


def cli_signer() -> RecordSigner:
    """A signer of records under the workers' cluster secret (the environment's), as the CLI."""
    return RecordSigner(ClusterKey(os.environ["PERSONA_CLUSTER_SECRET"]), "cli:test")


def publish_recs(broker: EmbeddedBroker, folder: Path, k: int) -> str:
    """A recs model fitted with `k` (another `k`: another version), saved into `folder` and
    published signed by `cli_signer`: its version."""
    bundle = read_bundle(save_model(fit_recommender(basket_events(), k=k), folder))
    asyncio.run(publish(broker.url, bundle, cli_signer()))
    return bundle.version


def models_records(broker: EmbeddedBroker) -> int:
    """How many records the models topic holds (read as they are, no signature checked)."""

    async def count() -> int:
        return len([m async for m in read_messages(broker.url, [MODELS_TOPIC], idle=0.5)])

    return asyncio.run(count())
