"""`persona run` with a reader, its keys in PERSONA_API_KEYS_FILE: a key revoked and one added in
the file are taken by the reader (the public port) and the worker without a restart, and SIGHUP
to `persona run` without a controlling terminal (a service) makes both read the file again at
once (and ends nothing); in a terminal, a SIGHUP stops it."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from tests.conftest import http, wait_until
from tests.persona.runs import persona_run

OLD = "old-secret-of-24-chars-xxx"
NEW = "new-secret-of-24-chars-xxx"
PROFILE = "/v1/users/keys-reload-u1/blocks/recommendations"


def _write(path: Path, text: str) -> None:
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    new.chmod(0o600)
    os.replace(new, path)


def _reloads(base: str, key: str) -> float:
    status, _, body = http("GET", base + "/metrics", key=key)
    assert status == 200
    found = re.search(rb"^persona_api_keys_reloads_total (\S+)$", body, re.M)
    assert found is not None
    return float(found.group(1))


def test_keys_file_changes_are_taken_by_the_reader_and_the_worker(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    _write(keys, f"old:{OLD}:content:read,models:admin\n")
    env = {"PERSONA_API_KEYS_FILE": str(keys)}
    with persona_run(tmp_path, 1, "", env, service=True) as run:  # no terminal: SIGHUP reloads
        ends = (run.base, run.worker)
        for base in ends:
            assert http("GET", base + PROFILE, key=OLD)[0] == 200
            assert http("GET", base + PROFILE, key=NEW)[0] == 401
        # SIGHUP: the unchanged file read again by both at once (the poll reads only a change)
        os.kill(run.pid, signal.SIGHUP)
        for base in ends:
            wait_until(lambda b=base: _reloads(b, OLD) == 1, 60, what=f"SIGHUP reload {base}")
        # the file changed: the poll takes it (the old key revoked, the new one added)
        _write(keys, f"new:{NEW}:content:read,models:admin\n")
        for base in ends:
            wait_until(
                lambda b=base: http("GET", b + PROFILE, key=NEW)[0] == 200, 60, what=f"new {base}"
            )
            assert http("GET", base + PROFILE, key=OLD)[0] == 401
            assert _reloads(base, NEW) == 2


_SAYS = "from persona.supervisor import hangup_reloads; print(hangup_reloads())"


def test_sighup_reloads_only_without_a_controlling_terminal() -> None:
    """As a service (no controlling terminal) SIGHUP is a reload; in a terminal it is the
    terminal going away, and `persona run` keeps stopping on it."""
    import pty
    import subprocess
    import sys

    from tests.conftest import ROOT

    detached = subprocess.run(
        [sys.executable, "-c", _SAYS], cwd=ROOT, capture_output=True, text=True,
        start_new_session=True, check=True, timeout=60,
    )  # fmt: skip
    assert detached.stdout.strip() == "True"
    pid, fd = pty.fork()  # the child's controlling terminal: the pty
    if pid == 0:
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-c", _SAYS])
    said = b""
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        said += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    assert said.strip() == b"False", said
