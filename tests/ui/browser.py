"""Headless Debian Chromium for the browser tests: the rendered DOM and screenshots of a page.

No browser download ever happens: the tests use the `chromium` on PATH (`make test` installs
Debian's package when it can) and skip with the reason when there is none. Every host name but
127.0.0.1 resolves to nothing, so a page cannot reach outside the machine (product images in the
demo catalog point at shop.example.com).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)


def chromium() -> str:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "no chromium on PATH: `make test` installs Debian's chromium when it runs as root with "
        "apt-get (or run `apt-get install -y chromium` yourself)"
    )


def run(url: str, *args: str, budget_ms: int = 6000, timeout: float = 90.0) -> str:
    """Load `url`, let the page run for `budget_ms` of virtual time, return stdout."""
    with tempfile.TemporaryDirectory(prefix="persona-chromium-") as profile:
        result = subprocess.run(
            [
                chromium(),
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                *args,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        raise AssertionError(f"chromium exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result.stdout


def dom(url: str, budget_ms: int = 6000) -> str:
    """The serialized DOM after the page's scripts ran."""
    return run(url, "--dump-dom", budget_ms=budget_ms)


def screenshot(url: str, name: str, size: str = "1400,1300", budget_ms: int = 6000) -> Path:
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / name
    path.unlink(missing_ok=True)
    run(url, f"--screenshot={path}", f"--window-size={size}", budget_ms=budget_ms)
    assert path.is_file() and path.stat().st_size > 10_000, f"no screenshot at {path}"
    return path
