"""A catalog feed's URL carries a token (PERSONA_CATALOG_FEEDS is a secret setting), and so may
the URL its host redirects to (a signed storage link): neither reaches a log line or the CLI's
output when a pull fails. aiohttp's InvalidUrlClientError (a redirect to a URL it cannot
parse) is the whole URL; the scheduled pull's `failed` line and `persona catalog import`'s
`cannot fetch the feed` wrote it as it was (persona/catalog_sync.py `scrubbed`)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from engine.settings import load_settings
from persona.catalog_sync import CatalogFeeds, scrubbed, shown
from streams.broker import free_port
from tests.conftest import ROOT

TOKEN = "s3cretFeedToken9"
SIGNATURE = "X-Amz-Signature=ab12cd34ef56"
BAD_TARGETS = {  # where the feed's host redirects: URLs aiohttp refuses to fetch
    "port": f"http://127.0.0.1:99999/export.csv?{SIGNATURE}",
    "port-text": f"http://storage.example.com:abc/export.csv?{SIGNATURE}",
}


async def _moved(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": BAD_TARGETS[request.match_info["to"]]})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    chosen = free_port()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/moved/{to}", _moved)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", chosen).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield chosen
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def _hidden(text: str) -> None:
    assert TOKEN not in text and "ab12cd34ef56" not in text


@pytest.mark.parametrize("to", list(BAD_TARGETS))
async def test_a_failed_pulls_line_holds_no_token(
    port: int, to: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{port}/moved/{to}?token={TOKEN}"
    settings = load_settings(
        env={"PERSONA_CATALOG_FEEDS": f"{url}@5", "PERSONA_DATA_DIR": str(tmp_path)}
    )
    feeds = CatalogFeeds(settings, "kafka://127.0.0.1:9")  # never reached: the fetch fails
    caplog.set_level(logging.INFO, "persona.catalog")
    assert await feeds.pull(0) is False
    (line,) = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert line.startswith(f"catalog sync {shown(url)} failed")
    assert "InvalidUrlClientError" in line  # what went wrong is still told
    _hidden(line)


def test_the_cli_says_why_a_fetch_failed_without_the_token(port: int) -> None:
    url = f"http://127.0.0.1:{port}/moved/port?token={TOKEN}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "persona",
            "catalog",
            "import",
            url,
            "--broker",
            "kafka://127.0.0.1:9",
        ],
        cwd=ROOT,
        env=dict(os.environ, PERSONA_PARTITIONS="4"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "cannot fetch the feed" in result.stderr, result.stderr
    assert "http://127.0.0.1:99999/export.csv" in result.stderr  # where it went wrong
    _hidden(result.stderr)


def test_scrubbed_keeps_scheme_host_and_path_of_every_url() -> None:
    text = f"InvalidUrlClientError: {BAD_TARGETS['port']} (from https://u:{TOKEN}@a.example/f)"
    assert scrubbed(text) == (
        "InvalidUrlClientError: http://127.0.0.1:99999/export.csv (from https://a.example/f)"
    )
    assert scrubbed(f"see http://[::1/f?k={TOKEN} now") == "see http://*** now"  # unparsable
    assert scrubbed("Cannot connect to host 127.0.0.1:1 ssl:default") == (
        "Cannot connect to host 127.0.0.1:1 ssl:default"
    )
