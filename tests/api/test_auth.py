from pathlib import Path

import pytest

from api.auth import SCOPES, InvalidKey, KeyRing, ensure_local_key, parse_entry


def test_entries_split_at_first_two_colons():
    key = parse_entry("sender:abc:content:read,feeds:read", "test")
    assert key.name == "sender" and key.scopes == {"content:read", "feeds:read"}


def test_authenticate_finds_the_key_and_keeps_no_secret():
    ring = KeyRing.from_settings("a:one:content:read;b:two:events:write", None)
    found = ring.authenticate("two")
    assert found is not None and found.name == "b"
    assert ring.authenticate("three") is None
    assert "two" not in repr(ring.keys)


@pytest.mark.parametrize("entry", ["noscopes:x:", "a:b", "a:b:content:write", ":x:content:read"])
def test_bad_entries_are_refused(entry):
    with pytest.raises(InvalidKey):
        parse_entry(entry, "test")


def test_keys_file(tmp_path: Path):
    f = tmp_path / "keys"
    f.write_text("# comment\nx:sec:content:read\n\n")
    assert KeyRing.from_settings(None, f).authenticate("sec") is not None


def test_local_key_is_created_once_with_every_scope(tmp_path: Path):
    path, line = ensure_local_key(tmp_path)
    assert oct(path.stat().st_mode)[-3:] == "600"
    assert ensure_local_key(tmp_path) == (path, line)
    key = parse_entry(line, "local")
    assert key.scopes == SCOPES
