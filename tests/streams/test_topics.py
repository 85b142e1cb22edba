"""A worker refuses to start on input topics whose partition count differs from its tables'."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.admin import ensure_topics, partition_counts
from streams.broker import EmbeddedBroker
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_worker_creates_missing_topics_and_refuses_mismatched_ones(tmp_path: Path) -> None:
    with EmbeddedBroker() as broker:
        asyncio.run(ensure_topics(broker.url, 3, ["clickstream"]))
        env = dict(
            os.environ,
            PERSONA_PARTITIONS="4",
            PERSONA_API_KEYS="t:t-kkkkkkkkkkkkkkkkkkkkkk:content:read",
        )
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "persona",
                "worker",
                "--broker",
                broker.url,
                "--data-dir",
                str(tmp_path),
                "--port",
                "0",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert "PERSONA_PARTITIONS is 4 but clickstream has 3 partitions" in result.stderr
        counts = asyncio.run(partition_counts(broker.url, ["cart", "social", "catalog"]))
        assert counts == {"cart": 4, "social": 4, "catalog": 4}
