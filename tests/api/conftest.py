"""Fixtures shared by the API tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.api.test_schemathesis import Server


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The API over the in-memory state and registry, served by `HotRunner` on its own thread
    (tests/api/test_schemathesis.py), one per test module."""
    from tests.api.test_schemathesis import Server

    started = Server(tmp_path_factory.mktemp("registry"))
    started.start()
    yield started
    started.stop()
