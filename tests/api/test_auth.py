from pathlib import Path

import pytest

from api.auth import MIN_SECRET, SCOPES, InvalidKey, KeyRing, ensure_local_key, parse_entry

ONE = "one-secret-of-24-chars-x"
TWO = "two-secret-of-24-chars-x"


def test_entries_split_at_first_two_colons():
    key = parse_entry(f"sender:{ONE}:content:read,feeds:read", "test")
    assert key.name == "sender" and key.scopes == {"content:read", "feeds:read"}


def test_authenticate_finds_the_key_and_keeps_no_secret():
    ring = KeyRing.from_settings(f"a:{ONE}:content:read;b:{TWO}:events:write", None)
    found = ring.authenticate(TWO)
    assert found is not None and found.name == "b"
    assert ring.authenticate("three") is None
    assert TWO not in repr(ring.keys)


@pytest.mark.parametrize("entry", ["noscopes:x:", "a:b", "a:b:content:write", ":x:content:read"])
def test_bad_entries_are_refused(entry):
    with pytest.raises(InvalidKey):
        parse_entry(entry, "test")


def test_keys_file(tmp_path: Path):
    f = tmp_path / "keys"
    f.write_text(f"# comment\nx:{ONE}:content:read\n\n")
    f.chmod(0o600)  # a keys file others can read is refused (tests/engine/test_files.py)
    assert KeyRing.from_settings(None, f).authenticate(ONE) is not None


def test_local_key_is_created_once_with_every_scope(tmp_path: Path):
    path, line = ensure_local_key(tmp_path)
    assert oct(path.stat().st_mode)[-3:] == "600"
    assert ensure_local_key(tmp_path) == (path, line)
    key = parse_entry(line, "local")
    assert key.scopes == SCOPES


SHORT = "Sh0rt-but-23-characters"  # one character under the minimum


def test_short_secrets_are_refused_without_showing_them(tmp_path: Path) -> None:
    assert len(SHORT) == MIN_SECRET - 1
    with pytest.raises(InvalidKey) as env:
        KeyRing.from_settings(f"ok:{ONE}:content:read;shop:{SHORT}:content:read", None)
    assert "PERSONA_API_KEYS entry 2" in str(env.value) and "'shop'" in str(env.value)
    assert SHORT not in str(env.value)
    f = tmp_path / "keys"
    f.write_text(f"shop:{SHORT}:content:read\n")
    f.chmod(0o600)
    with pytest.raises(InvalidKey) as env:
        KeyRing.from_settings(None, f)
    assert f"{f}:1" in str(env.value) and SHORT not in str(env.value)
    assert KeyRing.from_settings(f"shop:{SHORT}x:content:read", None).authenticate(SHORT + "x")


def test_the_local_key_is_long(tmp_path: Path) -> None:
    _, line = ensure_local_key(tmp_path)
    assert len(line.split(":")[1]) >= MIN_SECRET


async def test_a_rotated_key_works_under_both_secrets_and_shares_its_name() -> None:
    """What docs/security.md 'Rotating an API key' relies on: an entry with the same name and a
    new secret beside the old one is accepted, both secrets act as that one key (its name: rate
    limit, audit), and the old one stops working once its entry is removed (from the keys file:
    read again without a restart, tests/api/test_key_reload.py)."""
    from aiohttp.test_utils import TestClient, TestServer

    from api.app import create_app
    from api.content import ContentService
    from api.limits import LIMITER, ServingOptions
    from api.testing import MemoryState
    from engine.blocks import BlockPolicy, Renderer
    from models.registry import ModelSet

    both = f"shop:{ONE}:content:read;shop:{TWO}:content:read"
    content = ContentService(MemoryState(), ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(both, None), ServingOptions({"shop": 1.0}))
    async with TestClient(TestServer(app)) as client:
        path = "/v1/users/u1/blocks/recommendations"
        first = await client.get(path, headers={"Authorization": f"Bearer {ONE}"})
        assert first.status == 200
        second = await client.get(path, headers={"Authorization": f"Bearer {TWO}"})
        assert second.status == 429  # one bucket: the key's name, whichever secret
        assert app[LIMITER].limited == 1
    rotated = KeyRing.from_settings(f"shop:{TWO}:content:read", None)
    assert rotated.authenticate(ONE) is None and rotated.authenticate(TWO) is not None
