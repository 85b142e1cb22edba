"""`persona run`: the embedded broker (without a broker URL), the worker, the readers, the demo.

The children are started, watched and restarted by `persona/children.py`: a worker or reader that
dies is started again with a back-off, a broker death restarts all of them from a clean state,
and a child that keeps failing stops everything. On SIGTERM/SIGINT the worker and the readers
stop at once, then the broker, all within one deadline (`children.STOP_DEADLINE`); a stop is
never answered with a restart, and a demo load in progress ends at once (the next `--demo`
resumes it: persona/demo_load.py). Without a controlling terminal (a service), SIGHUP is passed
on to the worker and the readers, which read PERSONA_API_KEYS_FILE again (api/key_reload.py), and
does not end `persona run`; in a terminal it stops it, as a hangup does (`hangup_reloads`). Every
child also dies with this process if it is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from api.auth import LOCAL_KEY_FILE, KeyRing, ensure_local_key
from engine.blocks import Renderer
from engine.files import LOCK_FD_ENV, ensure_secret_file, lock_data_dir, private_dir
from engine.settings import (
    EMBEDDED_SECRET_FILE,
    Settings,
    SettingsError,
    require_cluster_secret,
    with_cluster_secret_file,
)
from engine.signing import new_secret
from persona.children import Children, GaveUp, Stop
from persona.demo_load import DEMO_DIR, load_demo
from persona.runtime import WORKER_FILES_PER_PARTITION, check_open_files
from persona.state_dir import check_partitions
from persona.state_dir import prepare as prepare_state_dir
from streams.adopt import DEMO_MARK, DEMO_PROGRESS, partition_dbs, start_fresh

CLUSTER_SECRET_FILE = EMBEDDED_SECRET_FILE  # the embedded default's PERSONA_CLUSTER_SECRET_FILE


def hangup_reloads() -> bool:
    """Whether SIGHUP asks `persona run` to pass it on (the worker and the readers read
    PERSONA_API_KEYS_FILE again at once; they also poll it every second) rather than to stop:
    only without a controlling terminal (a service: `systemctl reload`). In a terminal, SIGHUP
    is the terminal going away: `persona run` stops, as it always did, rather than run on
    unseen, holding its port and data dir (or ignores it, under nohup)."""
    try:
        tty = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:  # no controlling terminal
        return True
    os.close(tty)
    return False


def run(settings: Settings, demo: bool = False, fresh: bool = False) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    KeyRing.from_settings(settings.api_keys, settings.api_keys_file)  # fail fast on bad keys
    # the block templates and their variants (PERSONA_TEMPLATE_DIR), as every worker and reader
    # checks them: a missing or broken file said once here, not by children restarted on it
    Renderer(template_dir=settings.template_dir)
    if settings.http_port == 0:
        raise SettingsError(
            "PERSONA_HTTP_PORT=0: `persona run` needs a fixed port (its readers share it)"
        )
    check_listen(settings.http_host, settings.http_port)  # a taken port: said before any child
    # the children inherit the limit (raised to the hard one): too low, each one would die at start
    check_open_files(settings.partitions, WORKER_FILES_PER_PARTITION, "the worker")
    if settings.readers and settings.worker_port:
        if settings.worker_port == settings.http_port:
            raise SettingsError("PERSONA_WORKER_PORT: the readers' port (PERSONA_HTTP_PORT) too")
        check_listen("127.0.0.1", settings.worker_port, "PERSONA_WORKER_PORT")
    if not settings.embedded:  # said before the data dir is made or marked (state-format.json)
        require_cluster_secret(settings)
    data_dir = settings.data_dir
    try:
        lock = _take_data_dir(settings, fresh)
        # decided before this start adds any state; on Kafka the demo is replayed as before
        demo_kept = demo and settings.embedded and _demo_kept(data_dir)
        env = dict(os.environ)
        # the worker inherits the lock's descriptor (keep_fds) and checks it by this number
        # instead of taking the lock (engine.files.hold_data_dir); the readers take none
        env[LOCK_FD_ENV] = str(lock)
        settings = _cluster_secret(settings, env)
        key_line: str | None = None
        if not settings.api_keys and not settings.api_keys_file:
            key_path, key_line, said = local_key(data_dir)
            env["PERSONA_API_KEYS_FILE"] = str(key_path)
            print(said)
    except OSError as exc:  # read-only, no space, permissions: before any child
        where = f" ({exc.filename})" if exc.filename else ""
        raise SettingsError(
            f"the data dir {data_dir} cannot be used: {exc.strerror or exc}{where}; "
            "--data-dir (PERSONA_DATA_DIR) must name a directory this user can write, with room"
        ) from None
    children = Children(settings, env, stop, keep_fds=(lock,))
    if hangup_reloads():  # `systemctl reload`: the keys file read again at once
        signal.signal(signal.SIGHUP, lambda signum, frame: children.hang_up())
    try:
        _start(children, settings)
        if demo_kept:
            print(
                "persona: the demo data was loaded into this data dir before and its state is "
                "kept: not loading it again (`persona run --demo --fresh` starts over)"
            )
        elif demo and load_demo(settings, children.broker_url, stop, _alive(children)):
            (data_dir / DEMO_MARK).touch()
            (data_dir / DEMO_PROGRESS).unlink(missing_ok=True)
        if demo and not stop.is_set():
            print_examples(settings, children.public_base, data_dir, key_line, children.broker_url)
        children.watch()
        return 0
    except Stop:
        return 0
    except GaveUp as exc:
        print(f"persona: {exc}", file=sys.stderr)
        return 1
    finally:
        print("persona: stopping", file=sys.stderr)
        children.stop_all()
        children.status.remove()
        print("persona: stopped", file=sys.stderr)


def _take_data_dir(settings: Settings, fresh: bool) -> int:
    """Make the data dir ready for this run: 0700, locked for it (the lock's descriptor, held by
    this process and inherited by the worker until both are gone), with room,
    of a state format and partition count this release and the settings read."""
    data_dir = settings.data_dir
    tightened = private_dir(data_dir)  # 0700 (engine/files.py)
    if tightened:
        print(f"persona: {tightened}", file=sys.stderr)
    lock = lock_data_dir(data_dir)
    # a newer format, a piece this user cannot write or a full disk: refused before any child
    taken_over = prepare_state_dir(data_dir)
    if taken_over:
        print(f"persona: {taken_over}", file=sys.stderr)
    if fresh:
        _start_fresh(data_dir)
    if settings.embedded:  # on Kafka the topics' partition count is checked (TopicMismatch)
        names = [path.name for path in partition_dbs(data_dir)]
        check_partitions(names, settings.partitions, f"the data dir {data_dir}")
    return lock


HTTP_PORT = "PERSONA_HTTP_PORT"


def check_listen(host: str, port: int, setting: str = HTTP_PORT) -> None:
    """SettingsError unless the API could listen on host:port now: a port another process
    holds, or a host that is no address of this machine, would otherwise be found by each
    child in turn, restarted until `persona run` gave up (and a `persona worker` would end in
    Faust's traceback). (The readers share the port with
    SO_REUSEPORT; a probe without it fails on a port anyone else listens on.)"""
    if port == 0:  # any free port: nothing to check
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise SettingsError(f"PERSONA_HTTP_HOST={host!r} cannot be resolved: {exc}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SettingsError(
                    f"{setting}: {host}:{port} is in use by another process; stop it "
                    f"or choose another port ({'--port, ' if setting == HTTP_PORT else ''}"
                    f"{setting})"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise SettingsError(
                    f"PERSONA_HTTP_HOST={host!r} is no address of this machine (127.0.0.1: "
                    "this machine only; 0.0.0.0: every interface)"
                ) from None
            raise SettingsError(
                f"PERSONA_HTTP_HOST/PERSONA_HTTP_PORT: cannot listen on {host}:{port}: "
                f"{exc.strerror or exc}"
            ) from None


def _cluster_secret(settings: Settings, env: dict[str, str]) -> Settings:
    """With a broker URL the cluster secret is required; the embedded default makes one in
    `<data dir>/cluster-secret` (0600, kept) and hands it to its children. Returns the settings
    with the secret (the adoption of a new embedded broker marks kept records with it)."""
    if settings.cluster_secret is not None or not settings.embedded:
        require_cluster_secret(settings)
        return settings
    path = ensure_secret_file(
        settings.data_dir / CLUSTER_SECRET_FILE, new_secret, "the cluster secret file"
    )
    env["PERSONA_CLUSTER_SECRET_FILE"] = str(path)
    return with_cluster_secret_file(settings, path)


def _start_fresh(data_dir: Path) -> None:
    """`--fresh` (embedded broker only): the kept state is removed on purpose, and said so."""
    removed = start_fresh(data_dir)
    what = ", ".join(f"{data_dir / name}/" for name in removed) or "nothing was kept"
    print(
        f"persona: --fresh: starting from empty state (removed: {what}; "
        "the local API key and audit.log are kept)"
    )


def _demo_kept(data_dir: Path) -> bool:
    """Whether the demo data was loaded into this data dir and its tables are still there."""
    return (data_dir / DEMO_MARK).exists() and bool(partition_dbs(data_dir))


def _start(children: Children, settings: Settings) -> None:
    if children.broker is not None:
        print(
            f"persona: embedded broker on {children.broker_url.split('//')[1]} "
            f"(in memory; log {settings.data_dir}/broker.log)"
        )
    children.start_all()
    if settings.readers:
        print(
            f"persona: worker on {children.worker_base} (private), "
            f"{len(children.readers)} reader(s)"
        )
    print(f"persona: ready on {children.public_base}")


def _alive(children: Children) -> Callable[[], bool]:
    return lambda: children.worker.exited() is None


def _demo_users(n: int = 3) -> tuple[list[str], int]:
    """Customers of the demo orders with the most order lines (real ids from the sample), and the
    newest event time of the sample."""
    from engine.sources import read_events

    counts: dict[str, int] = {}
    newest = 0
    for event in read_events(DEMO_DIR / "orders.csv.gz"):
        counts[event.user_id] = counts.get(event.user_id, 0) + 1
        newest = max(newest, event.ts)
    users = [u for u, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
    return users, newest


def local_key(data_dir: Path) -> tuple[Path, str, str]:
    """The local all-scopes key of a start without configured keys (`ensure_local_key`), and the
    line saying so: created by this start, or the one an earlier start created (said as created
    at every start before, though the secret stayed the same)."""
    existed = (data_dir / LOCAL_KEY_FILE).exists()
    path, line = ensure_local_key(data_dir)
    if existed:
        return path, line, f"persona: no API key configured; using the local key in {path}"
    said = f"persona: no API key configured; created a local key with every scope in {path}"
    return path, line, said


def _persona_command(settings: Settings) -> str:
    """`persona` as this process was started (`make run`: `.venv/bin/persona`, not on PATH), with
    PERSONA_DATA_DIR when the data dir is not the default (the models commands find the embedded
    default's cluster secret there)."""
    argv0 = sys.argv[0] if sys.argv else ""
    on_path = shutil.which("persona")
    command = "persona"
    if Path(argv0).name == "persona" and not (on_path and Path(on_path).samefile(argv0)):
        command = argv0
    if settings.data_dir != Path("data"):
        command = f"PERSONA_DATA_DIR={settings.data_dir} {command}"
    return command


def _from_here(path: Path) -> str:
    """`path` relative to the working directory when it lies under it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def print_examples(
    settings: Settings, base: str, data_dir: Path, key_line: str | None, broker_url: str
) -> None:
    users, newest = _demo_users()
    key_file = data_dir / LOCAL_KEY_FILE
    lines = ["", "Persona is running with the demo data. Try:", ""]
    if key_line:
        lines.append(f"  export PERSONA_KEY=$(cut -d: -f2 {key_file})")
    else:
        lines.append("  export PERSONA_KEY=<a secret from PERSONA_API_KEYS with content:read>")
    auth = '-H "Authorization: Bearer $PERSONA_KEY"'
    for user in users:
        lines.append(f"  curl {auth} {base}/v1/users/{user}/blocks/recommendations")
    if users:
        u = users[0]
        lines.append(f"  curl {auth} '{base}/v1/users/{u}/blocks/recommendations?format=json'")
        lines.append(f"  curl {auth} {base}/v1/users/{u}/profile")
        lines.append(
            f"  curl {auth} {base}/v1/users/{u}/blocks/winback"
            "  # its fallback (low_churn_risk) unless this customer is likely to leave"
        )
    lines.append(f"  curl {auth} {base}/v1/users/someone-new/blocks/recommendations  # fallback")
    event = json.dumps(
        {
            "event_id": "demo-1",
            "type": "add_to_cart",
            "user_id": users[0] if users else "u1",
            "ts": newest + 60_000,
            "item_id": "85123A",
        }
    )
    lines.append(f"  curl {auth} -X POST {base}/v1/events -d '[{event}]'")
    who = f"?user={users[0]}" if users else ""
    persona = _persona_command(settings)
    # the embedded broker takes a new free port at every start: the other commands need it
    broker = f" --broker {broker_url}" if settings.embedded else ""
    catalog = _from_here(DEMO_DIR / "catalog.jsonl.gz")
    lines += [
        "",
        "In a browser (sign in with the key's secret, or paste the whole line of "
        f"{key_file if key_line else 'your key entry'}):",
        f"  {base}/ui/preview{who}",
        f"  {base}/ui/dashboard",
        "",
        "The other commands (each has --help), from this directory:",
        f"  {persona} models list{broker}",
        f"  {persona} catalog import {catalog}{broker}",
        "",
        "Stop with Ctrl-C.",
        "",
    ]
    print("\n".join(lines), flush=True)
