"""`persona run` passes SIGHUP on to the worker and the readers (they read PERSONA_API_KEYS_FILE
again: api/key_reload.py), and a child that has not installed its handler yet is not ended by
one (`serving_child` starts it with SIGHUP ignored)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

from engine.settings import load_settings
from persona.children import Child, Children, serving_child
from tests.conftest import wait_until

# installs a SIGHUP handler that writes a line, says it is ready, and waits
COUNTING = """
import signal, sys, time
path = sys.argv[1]
def on_hup(signum, frame):
    with open(path, "a") as fh:
        fh.write("hup\\n")
signal.signal(signal.SIGHUP, on_hup)
open(path + ".ready", "w").close()
time.sleep(120)
"""


def _child(kind: str, launch: subprocess.Popen[bytes], children: Children) -> Child:
    child = Child(kind, kind, lambda: launch, children._policy())
    child.start()
    return child


def test_sighup_reaches_the_worker_and_every_reader(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": str(tmp_path / "data"), "readers": 2}, env={})
    children = Children(settings, {}, threading.Event())
    outs = [tmp_path / f"out{i}" for i in range(3)]
    procs = [
        subprocess.Popen([sys.executable, "-c", COUNTING, str(out)], preexec_fn=serving_child)
        for out in outs
    ]
    try:
        children.worker = _child("worker", procs[0], children)
        children.readers = [_child("reader", p, children) for p in procs[1:]]
        wait_until(lambda: all(Path(f"{o}.ready").exists() for o in outs), what="ready")
        children.hang_up()
        wait_until(lambda: all(o.exists() and o.read_text() == "hup\n" for o in outs), what="hup")
        assert all(p.poll() is None for p in procs)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_a_child_starts_with_sighup_ignored() -> None:
    """Before its handler is installed a SIGHUP passed on does not end it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys; print(signal.getsignal(signal.SIGHUP))"],
        preexec_fn=serving_child,
        stdout=subprocess.PIPE,
    )
    out, _ = proc.communicate(timeout=60)
    assert out.decode().strip() == str(signal.SIG_IGN)
