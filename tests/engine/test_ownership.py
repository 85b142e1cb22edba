"""The ownership file a worker publishes for its readers (engine/ownership.py): written and read
back, and hostile contents refused with a reason, never half-used."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine import ownership
from engine.ownership import MAX_BYTES, Ownership, OwnershipError, parse, read, write

A = "http://10.0.0.1:8080"
B = "https://persona-2.internal:8443"


def body(**fields: object) -> bytes:
    base: dict[str, object] = {"v": 1, "own": A, "owners": [A, B, None, B]}
    base.update(fields)
    return json.dumps(base).encode()


def test_round_trip_and_routing(tmp_path: Path) -> None:
    path = tmp_path / ownership.FILE_NAME
    write(path, A + "/", [A, B + "/", None, B])
    view = read(path, 4)
    assert view == Ownership(A, (A, B, None, B), held=frozenset(range(4)))  # every one
    assert [view.owner_url(p) for p in range(4)] == [None, B, None, B]
    assert view.owner_url(4) is None and view.owner_url(-1) is None
    assert view.others and not Ownership(A, (A, None, A, A)).others
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [ownership.FILE_NAME]  # no temporary left


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[]", "exactly"),
        (body(extra=1), "exactly"),
        (body(v=3), "version"),
        (body(v=True), "version"),
        (body(own=None), '"own" is not a URL string'),
        (body(own="ftp://x"), "scheme 'ftp'"),
        (body(owners={"0": A}), "not a list"),
        (body(owners=[A, B, None]), "3 partitions where this process has 4"),
        (body(owners=[A] * 5), "5 partitions"),
        (body(own="http://u:p@evil"), '"own": the URL carries credentials'),
        (b" " * (MAX_BYTES + 1), f"larger than {MAX_BYTES} bytes"),
    ],
)
def test_hostile_contents_are_refused(raw: bytes, why: str) -> None:
    with pytest.raises(OwnershipError) as refused:
        parse(raw, 4)
    assert why in str(refused.value)


@pytest.mark.parametrize(
    ("v", "why"),
    [
        (3, "version 3 is not one read here (1, 2)"),
        (0, "version 0 is not one read here (1, 2)"),
        (1.0, "version 1.0 is not one read here (1, 2)"),
        (2.0, "version 2.0 is not one read here (1, 2)"),
        (True, "version true is not one read here (1, 2)"),
        ("2", 'version "2" is not one read here (1, 2)'),
        ([2], "version a list is not one read here (1, 2)"),
        (None, "version null is not one read here (1, 2)"),
    ],
)
def test_a_version_not_read_says_which_are(v: object, why: str) -> None:
    """A file of an unknown version said "version 3 is not 2" though version 1 is read too; and
    `"v": 1.0` or `2.0` (1.0 == 1 in Python) were read as 1 or 2. Now only the integers 1 and
    2 are versions, and the refusal names both."""
    fields: dict[str, object] = {"v": v}
    if v in (2, 2.0):
        fields["held"] = [0]
    with pytest.raises(OwnershipError) as refused:
        parse(body(**fields), 4)
    assert str(refused.value) == why


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (7, "partition 1 is not a URL string"),
        ([B], "partition 1 is not a URL string"),
        ("http://u:p@evil", "partition 1: the URL carries cred"),
        ("http://evil/steal", "partition 1: the URL has a path"),
        ("http://evil:99999", "partition 1: not a URL"),
        ("http://ev il", "partition 1: control characters or spaces"),
        ("http://e\nvil", "partition 1: control characters or spaces"),
        ("http://" + "e" * 3000, "partition 1: longer than 2048"),
        ("javascript:alert(1)", "partition 1: scheme 'javascript'"),
    ],
)
def test_a_bad_peer_url_costs_only_its_own_partitions(entry: object, why: str) -> None:
    """Before, one bad peer URL refused the whole file: the reader answered every user locally
    (the good peers' users from a standby copy too). Now only that entry is set aside (its
    partition answered locally: no hop goes to it), the rest of the view stands, and why is
    kept for the reader to say once; the URL itself is never repeated (credentials)."""
    view = parse(body(owners=[A, entry, None, B]), 4)
    assert view.owners == (A, None, None, B)
    assert [view.owner_url(p) for p in range(4)] == [None, None, None, B]
    assert view.others
    assert len(view.refused) == 1 and view.refused[0].startswith(why)
    assert "u:p" not in view.refused[0] and "evil" not in view.refused[0]


def test_every_bad_entry_is_said_and_a_clean_view_says_nothing() -> None:
    view = parse(body(owners=["ftp://x", "http://a/b", A, B]), 4)
    assert view.owners == (None, None, A, B)
    assert [r.split(":")[0] for r in view.refused] == ["partition 0", "partition 1"]
    assert parse(body(), 4).refused == ()


def test_reading_is_bounded_and_never_blocks(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(body() + b" " * (2 * MAX_BYTES))  # valid JSON past the bound: refused unread
    with pytest.raises(OwnershipError, match="larger than"):
        read(big, 4)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # a FIFO with no writer: a plain open would wait forever
    with pytest.raises(OwnershipError, match="not a regular file"):
        read(fifo, 4)
    link = tmp_path / "link"
    link.symlink_to(big)
    with pytest.raises(OSError):
        read(link, 4)
    with pytest.raises(FileNotFoundError):
        read(tmp_path / "missing", 4)


def test_describe() -> None:
    assert ownership.describe([A, B, None, A]) == f"{A}: 0,3; {B}: 1; unknown: 2"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("::1", "http://[::1]:8080"),
        ("fd00::5", "http://[fd00::5]:8080"),
        ("10.0.0.5", "http://10.0.0.5:8080"),
    ],
)
def test_a_worker_listening_on_an_ipv6_address_publishes_a_url_readers_take(
    tmp_path: Path, host: str, url: str
) -> None:
    """PERSONA_HTTP_HOST=::1 made the worker's own URL `http://::1:8080`, which is no URL: its
    readers refused every ownership file it wrote (and peers every hop to it)."""
    from engine.settings import load_settings

    settings = load_settings({}, {"PERSONA_HTTP_HOST": host, "PERSONA_HTTP_PORT": "8080"})
    assert settings.own_url == url
    path = tmp_path / ownership.FILE_NAME
    write(path, settings.own_url, [settings.own_url, B])
    assert read(path, 2).owners == (url, B)


def test_the_file_says_which_partitions_the_worker_holds(tmp_path: Path) -> None:
    """Version 2 names the partitions the worker holds now (owned or standby): a reader answers
    no other partition from the worker's tables (their copies are left over from an earlier
    assignment). A version-1 file (an older worker) says nothing of it: every partition."""
    path = tmp_path / ownership.FILE_NAME
    write(path, A, [A, B, None, B], held=[2, 0])
    view = read(path, 4)
    assert view.held == frozenset({0, 2})
    assert [view.holds(p) for p in range(4)] == [True, False, True, False]
    assert json.loads(path.read_bytes())["v"] == 2
    old = parse(body(), 4)  # version 1
    assert old.held is None and all(old.holds(p) for p in range(4))


@pytest.mark.parametrize(
    ("held", "why"),
    [
        ("0", '"held" is not a list'),
        ([0, 4], "partition 4 out of range"),
        ([-1], "partition -1 out of range"),
        ([True], "not a partition number"),
        ([0.0], "not a partition number"),
        ([1, 1], "twice"),
    ],
)
def test_a_hostile_held_list_is_refused(held: object, why: str) -> None:
    raw = json.dumps({"v": 2, "own": A, "owners": [A, B, None, B], "held": held}).encode()
    with pytest.raises(OwnershipError) as refused:
        parse(raw, 4)
    assert why in str(refused.value)
    with pytest.raises(OwnershipError, match="exactly"):
        parse(json.dumps({"v": 2, "own": A, "owners": [A, B, None, B]}).encode(), 4)
