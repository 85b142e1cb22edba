"""The worker's Faust logging: no terminal spinner turning the root logger to DEBUG."""

from __future__ import annotations

import logging

import faust
import pytest

from persona.worker import without_spinner


def stand_in_root(level: int) -> logging.Logger:
    root = logging.Logger("stand-in-root")
    root.addHandler(logging.NullHandler())
    root.setLevel(level)
    return root


@pytest.mark.parametrize("level", [logging.WARNING, logging.ERROR])
def test_a_quiet_worker_keeps_its_root_logger_at_its_level(level: int) -> None:
    """What Faust does to the root logger once it is configured (`on_setup_root_logger`), on a
    stand-in logger: a plain Faust worker turns it to DEBUG (so every library debug call builds
    a record); ours keeps the level."""
    plain = faust.Worker(faust.App("persona-logging-test-plain"), quiet=True)
    spun = stand_in_root(level)
    plain.on_setup_root_logger(spun, level)
    assert spun.isEnabledFor(logging.DEBUG)  # Faust's default, which without_spinner undoes

    worker = faust.Worker(faust.App("persona-logging-test"), quiet=True)
    without_spinner(worker)
    root = stand_in_root(level)
    worker.on_setup_root_logger(root, level)
    assert root.level == level and not root.isEnabledFor(logging.DEBUG)
    assert len(root.handlers) == 1
