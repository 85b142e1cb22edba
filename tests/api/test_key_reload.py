"""PERSONA_API_KEYS_FILE read again while the process runs (api/key_reload.py): a key revoked,
added or narrowed in the file is taken without a restart, on the hot path (api/hot.py's `Front`,
as the readers and the worker serve) and on the middleware chain alike; a file the start would
refuse leaves the keys as they were."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.hot import HotRunner, hot_middleware
from api.key_reload import KEY_WATCH, KeyWatch, reload_on_hangup
from api.limits import ServingOptions
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from models.registry import ModelSet

ONE = "one-secret-of-24-chars-xx"
TWO = "two-secret-of-24-chars-xx"
THREE = "three-secret-of-24-chars-x"
ENV = "env-secret-of-24-chars-xxx"
SHORT = "short-secret-23-chars-x"  # one under the minimum
BLOCK = "/v1/users/u1/blocks/recommendations"
FEED = "/v1/feeds/google.xml"


def write_keys(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace the keys file as the docs say to: a new file renamed over the old one."""
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    new.chmod(mode)
    os.replace(new, path)


class HotTestServer(TestServer):
    """Served by `HotRunner`, as the readers and the worker serve: block GETs by the front."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return HotRunner(self.app, **kwargs)


def _app(keys_file: Path, env: str | None = None, limits: dict[str, float] | None = None):
    content = ContentService(MemoryState(), ModelSet.default(), Renderer(), BlockPolicy())
    ring = KeyRing.from_settings(env, keys_file)
    return create_app(content, ring, ServingOptions(limits or {}))


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    write_keys(path, f"# the shop\nshop:{ONE}:content:read,feeds:read\nesp:{TWO}:content:read\n")
    return path


@pytest.fixture(params=["front", "chain"])
async def client(request: pytest.FixtureRequest, keys_file: Path) -> AsyncIterator[TestClient]:
    """A client of an application on the keys file: served by the hot path's front, or by the
    middleware chain alone."""
    app = _app(keys_file)
    if request.param == "front":
        server: TestServer = HotTestServer(app)
    else:
        app.middlewares.remove(hot_middleware)
        server = TestServer(app)
    async with TestClient(server) as c:
        yield c


async def status(client: TestClient, secret: str, path: str = BLOCK) -> int:
    async with client.get(path, headers={"Authorization": f"Bearer {secret}"}) as answer:
        await answer.read()
        return answer.status


def watch(client: TestClient) -> KeyWatch:
    return client.app[KEY_WATCH]


async def metric(client: TestClient, name: str) -> float:
    async with client.get("/metrics") as answer:
        text = await answer.text()
    (line,) = [x for x in text.splitlines() if x.startswith(name + " ")]
    return float(line.split()[1])


async def test_a_removed_key_is_401_on_the_next_request(client: TestClient, keys_file: Path):
    assert await status(client, ONE) == 200 and await status(client, TWO) == 200
    write_keys(keys_file, f"esp:{TWO}:content:read\n")
    assert await status(client, ONE) == 200  # not read again yet
    assert watch(client).check()
    assert await status(client, ONE) == 401
    assert await status(client, TWO) == 200
    assert await metric(client, "persona_api_keys_reloads_total") == 1
    assert await metric(client, "persona_api_keys") == 1
    assert not watch(client).check()  # unchanged: not read again
    assert await metric(client, "persona_api_keys_reloads_total") == 1


async def test_an_added_key_works(client: TestClient, keys_file: Path):
    assert await status(client, THREE) == 401
    write_keys(keys_file, keys_file.read_text() + f"new:{THREE}:content:read\n")
    watch(client).check()
    assert await status(client, THREE) == 200
    assert await status(client, ONE) == 200


async def test_a_narrowed_key_loses_the_scope(client: TestClient, keys_file: Path):
    assert await status(client, ONE) == 200
    write_keys(keys_file, f"shop:{ONE}:feeds:read\nesp:{TWO}:content:read\n")
    watch(client).check()
    assert await status(client, ONE) == 403
    assert await status(client, ONE, FEED) != 403  # the scope it kept


@pytest.mark.parametrize(
    "bad",
    [
        f"shop:{ONE}:content:read\nesp:{SHORT}:content:read\n",  # a short secret
        f"shop:{ONE}:content:write\n",  # an unknown scope
        f"shop:{ONE}\n",  # no scopes
    ],
)
async def test_a_bad_file_keeps_the_keys_and_is_counted(
    client: TestClient, keys_file: Path, bad: str, caplog: pytest.LogCaptureFixture
):
    write_keys(keys_file, bad)
    with caplog.at_level(logging.ERROR, "persona.api"):
        assert watch(client).check()
    assert await status(client, ONE) == 200 and await status(client, TWO) == 200
    assert await metric(client, "persona_api_keys_reload_failures_total") == 1
    assert await metric(client, "persona_api_keys_reloads_total") == 0
    (record,) = [r for r in caplog.records if "PERSONA_API_KEYS_FILE" in r.getMessage()]
    message = record.getMessage()
    assert str(keys_file) in message and "kept" in message
    assert ONE not in message and SHORT not in message
    # tried again at the next change: a good file is taken
    write_keys(keys_file, f"esp:{TWO}:content:read\n")
    assert watch(client).check()
    assert await status(client, ONE) == 401 and await status(client, TWO) == 200


async def test_a_file_not_utf8_or_too_large_keeps_the_keys(client: TestClient, keys_file: Path):
    keys_file.unlink()
    keys_file.write_bytes(b"shop:\xff" + b"x" * 30 + b":content:read\n")
    keys_file.chmod(0o600)
    watch(client).check()
    assert await status(client, ONE) == 200
    assert watch(client).failures == 1


async def test_a_removed_file_keeps_the_keys(client: TestClient, keys_file: Path):
    keys_file.unlink()
    assert watch(client).check()
    assert await status(client, ONE) == 200 and await status(client, TWO) == 200
    assert await metric(client, "persona_api_keys_reload_failures_total") == 1
    assert not watch(client).check()  # still gone: not counted again
    write_keys(keys_file, f"new:{THREE}:content:read\n")  # back: taken
    assert watch(client).check()
    assert await status(client, THREE) == 200 and await status(client, ONE) == 401


async def test_a_symbolic_link_swapped_in_is_refused(
    client: TestClient, keys_file: Path, tmp_path: Path
):
    target = tmp_path / "elsewhere"
    write_keys(target, f"new:{THREE}:content:read\n")
    keys_file.unlink()
    keys_file.symlink_to(target)
    assert watch(client).check()
    assert await status(client, THREE) == 401
    assert await status(client, ONE) == 200
    assert watch(client).failures == 1


async def test_a_file_others_can_read_is_refused(client: TestClient, keys_file: Path):
    write_keys(keys_file, f"new:{THREE}:content:read\n", mode=0o644)
    assert watch(client).check()
    assert await status(client, THREE) == 401 and await status(client, ONE) == 200
    assert await metric(client, "persona_api_keys_reload_failures_total") == 1
    keys_file.chmod(0o600)  # its mode fixed: a change (of its st_ctime), taken
    assert watch(client).check()
    assert await status(client, THREE) == 200 and await status(client, ONE) == 401


async def test_environment_keys_stay_whatever_the_file_says(keys_file: Path):
    app = _app(keys_file, env=f"fixed:{ENV}:content:read")
    async with TestClient(HotTestServer(app)) as client:
        assert await status(client, ENV) == 200 and await status(client, ONE) == 200
        write_keys(keys_file, "# nobody\n")
        assert watch(client).check()
        assert await status(client, ENV) == 200 and await status(client, ONE) == 401
        assert await metric(client, "persona_api_keys") == 1


async def test_an_added_key_takes_its_rate_limit_by_name(keys_file: Path):
    """PERSONA_RATE_LIMITS goes by key name: a key added under a limited name is limited."""
    app = _app(keys_file, limits={"late": 1.0})
    async with TestClient(HotTestServer(app)) as client:
        write_keys(keys_file, f"late:{THREE}:content:read\n")
        watch(client).check()
        assert await status(client, THREE) == 200
        assert await status(client, THREE) == 429


async def test_the_timer_takes_a_change_on_its_own(client: TestClient, keys_file: Path):
    write_keys(keys_file, f"new:{THREE}:content:read\n")
    for _ in range(120):  # the poll is once a second: up to 30 s on a loaded machine
        if await status(client, THREE) == 200:
            break
        await asyncio.sleep(0.25)
    assert await status(client, THREE) == 200
    assert await status(client, ONE) == 401
    assert watch(client).reloads == 1


async def test_sighup_reads_the_file_at_once(client: TestClient, keys_file: Path):
    """`reload_on_hangup` (the worker and the readers install it): SIGHUP reads the file even
    when nothing the poll looks at changed."""
    assert not watch(client).check()
    loop = asyncio.get_running_loop()
    assert reload_on_hangup(client.app)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(300):
            if watch(client).reloads:
                break
            await asyncio.sleep(0.1)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
    assert watch(client).reloads == 1  # the poll never reads an unchanged file
    assert await status(client, ONE) == 200


async def test_no_watch_without_a_keys_file():
    content = ContentService(MemoryState(), ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(f"fixed:{ENV}:content:read", None))
    assert KEY_WATCH not in app
    assert not reload_on_hangup(app)
