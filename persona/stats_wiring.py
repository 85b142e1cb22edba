"""Wires the stats board (streams/stats_board.py) into a worker or a reader: the process
publishes its dashboard figures and its `/v1/stats` merges every other live process's."""

from __future__ import annotations

import os

from aiohttp import web

from api.observability import TELEMETRY, follow_peers
from engine.process_stats import process_label
from engine.settings import Settings
from persona.models_wiring import process_signer
from streams.kafka_security import Broker
from streams.stats_board import StatsBoard


def stats_board(
    settings: Settings,
    broker_url: Broker,
    app: web.Application,
    kind: str,
    process: str,
    index: int | None = None,
) -> StatsBoard:
    """The board of process `process` (a worker or reader `index`), not started yet."""
    telemetry = app[TELEMETRY]
    signer = process_signer(settings, process)
    board = StatsBoard(broker_url, process, telemetry.published, signer)
    label = process_label(kind, settings.own_url, os.getpid(), index)
    follow_peers(app, process, kind, board.peers, label)
    return board
