"""Who may read Persona's files (issue 15 item 5): the data dir 0700, secret files 0600 and
refused, with a message naming the file and the fix, when others could read or replace them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from api.auth import InvalidKey, KeyRing, ensure_local_key
from engine.files import UnsafeFile, check_secret_file, private_dir
from engine.settings import SettingsError
from tests.conftest import CLUSTER_SECRET, ROOT

SECRET = "k-" + "s" * 30
ENTRY = f"x:{SECRET}:content:read\n"
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _secret_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "keys"
    path.write_text(ENTRY)
    path.chmod(mode)
    return path


def test_the_data_dir_is_created_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert private_dir(tmp_path / "a" / "data") is None
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a" / "data") == 0o700


def test_a_looser_data_dir_is_tightened_with_a_note(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    note = private_dir(data)
    assert _mode(data) == 0o700
    assert note is not None and str(data) in note and "0755" in note and "0700" in note
    assert private_dir(data) is None  # already private: nothing to say


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("")
    with pytest.raises(UnsafeFile, match="not a directory"):
        private_dir(tmp_path / "data")


@ROOT_ONLY
def test_a_data_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chown(data, 65534, 65534)
    with pytest.raises(UnsafeFile, match="owned by uid 65534") as refused:
        private_dir(data)
    assert str(data) in str(refused.value) and _mode(data) == 0o755  # not touched


def test_a_private_secret_file_and_a_missing_one_pass(tmp_path: Path) -> None:
    check_secret_file(_secret_file(tmp_path), "PERSONA_API_KEYS_FILE")
    check_secret_file(tmp_path / "nothing", "PERSONA_API_KEYS_FILE")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644, 0o666, 0o610])
def test_a_secret_file_others_can_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = _secret_file(tmp_path, mode)
    with pytest.raises(UnsafeFile) as refused:
        check_secret_file(path, "PERSONA_API_KEYS_FILE")
    text = str(refused.value)
    assert f"PERSONA_API_KEYS_FILE={path}" in text and f"chmod 600 {path}" in text
    assert f"{mode:04o}" in text and SECRET not in text
    assert _mode(path) == mode  # never fixed silently


def test_a_symlinked_secret_file_is_refused_even_to_a_private_file(tmp_path: Path) -> None:
    target = _secret_file(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(UnsafeFile, match="symbolic link") as refused:
        check_secret_file(link, "PERSONA_API_KEYS_FILE")
    assert str(link) in str(refused.value) and str(target) in str(refused.value)


def test_a_secret_path_that_is_no_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeFile, match="not a regular file"):
        check_secret_file(tmp_path, "PERSONA_API_KEYS_FILE")


@ROOT_ONLY
def test_a_secret_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = _secret_file(tmp_path)
    os.chown(path, 65534, 65534)
    with pytest.raises(UnsafeFile, match=f"owned by uid 65534.*chown {os.geteuid()} {path}"):
        check_secret_file(path, "PERSONA_API_KEYS_FILE")


def test_the_keys_file_is_checked_before_it_is_read(tmp_path: Path) -> None:
    path = _secret_file(tmp_path, 0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        KeyRing.from_settings(None, path)
    path.chmod(0o600)
    assert KeyRing.from_settings(None, path).authenticate(SECRET) is not None


def test_a_local_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path, _ = ensure_local_key(tmp_path / "data")
    assert _mode(tmp_path / "data") == 0o700 and _mode(path) == 0o600
    path.chmod(0o644)
    with pytest.raises(UnsafeFile, match=f"the local API key file {path} can be read"):
        ensure_local_key(tmp_path / "data")
    assert not issubclass(UnsafeFile, InvalidKey)  # a settings error: the CLI prints it, exit 2


def test_persona_refuses_to_start_on_a_loose_keys_file(tmp_path: Path) -> None:
    path = _secret_file(tmp_path, 0o640)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_")}
    env["PERSONA_API_KEYS_FILE"] = str(path)
    env["PERSONA_CLUSTER_SECRET"] = CLUSTER_SECRET  # checked first (test_cluster_secret.py)
    done = subprocess.run(
        [sys.executable, "-m", "persona", "worker", "--data-dir", str(tmp_path / "data"),
         "--broker", "kafka://127.0.0.1:9"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"PERSONA_API_KEYS_FILE={path}" in done.stderr and f"chmod 600 {path}" in done.stderr
    assert SECRET not in done.stderr + done.stdout


def test_the_settings_never_show_their_secrets() -> None:
    from engine.settings import load_settings

    env = {
        "PERSONA_API_KEYS": f"x:{SECRET}:content:read",
        "PERSONA_WEBHOOK_URLS": "http://127.0.0.1:9/hook",
        "PERSONA_WEBHOOK_SECRET": "w" + SECRET,
    }
    settings = load_settings(env=env)
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert settings.api_keys is not None and SECRET in settings.api_keys


def test_an_https_key_others_can_read_is_refused(tmp_path: Path) -> None:
    from engine.settings import load_settings

    key = _secret_file(tmp_path, 0o644)
    env = {"PERSONA_TLS_CERT": str(tmp_path / "cert.pem"), "PERSONA_TLS_KEY": str(key)}
    with pytest.raises(UnsafeFile, match=f"PERSONA_TLS_KEY={key} can be read.*chmod 600"):
        load_settings(env=env)
    key.chmod(0o600)
    assert load_settings(env=env).tls_key == key


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\xff\xfe\x00binary", "not UTF-8 text"), (None, "larger than")],
)
def test_a_keys_file_of_binary_or_huge_content_is_refused_by_name(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "keys"
    with path.open("wb") as out:
        if content is None:
            out.truncate(4 << 30)  # sparse: read whole it was a MemoryError
        else:
            out.write(content)  # it was a UnicodeDecodeError traceback
    path.chmod(0o600)
    with pytest.raises(InvalidKey, match=rf"PERSONA_API_KEYS_FILE={path}.*{message}"):
        KeyRing.from_settings(None, path)


@pytest.mark.timeout(60)
def test_read_regular_refuses_what_is_no_regular_file_saying_so(tmp_path: Path) -> None:
    """A directory given where a small file is read (`--map`, a secret file, a *_FILE setting)
    raised IsADirectoryError out of os.fdopen, its "filename" the descriptor's number
    ("[Errno 21] Is a directory: 3"); a FIFO without a writer and /dev/zero were refused
    already. Each is now the one ValueError, saying what it is not; a small file reads."""
    from engine.files import read_regular

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo, Path("/dev/zero")):
        with pytest.raises(ValueError, match="is not a regular file"):
            read_regular(path, 100)
    small = tmp_path / "small"
    small.write_bytes(b"x" * 100)
    assert read_regular(small, 100) == b"x" * 100
    with pytest.raises(ValueError, match="larger than 99 bytes"):
        read_regular(small, 99)
