"""engine.dead_letter: every letter fits in the bound, whatever the refused record holds."""

from __future__ import annotations

import base64
import json

from engine.dead_letter import Source, letter

SOURCE = Source("clickstream", 2, 41, 1_700_000_000.0)
BOUND = 900 * 1024


def test_a_small_record_is_wrapped_with_its_value_as_text_or_base64() -> None:
    dead = letter(b"u1", b'{"type": 5}', SOURCE, "unknown event type", BOUND)
    assert dead.key == b"u1"
    body = json.loads(dead.value)
    assert body["value"] == '{"type": 5}' and body["reason"] == "unknown event type"
    assert (body["topic"], body["partition"], body["offset"]) == ("clickstream", 2, 41)
    assert dict(dead.headers)["source-offset"] == b"41"
    binary = letter(None, b"\xff\xfe", SOURCE, "neither JSON nor msgpack", BOUND)
    assert json.loads(binary.value)["value_base64"] == base64.b64encode(b"\xff\xfe").decode()


def test_escapes_and_a_large_key_step_down_to_the_original_bytes() -> None:
    # 150,000 control characters are 900,000 bytes as JSON escapes; the key comes on top
    raw, key = b"\x01" * 150_000, b"k" * 200_000
    dead = letter(key, raw, SOURCE, "neither JSON nor msgpack", BOUND)
    assert dead.size() <= BOUND
    assert dead.key == key and dead.value == raw
    assert dict(dead.headers)["encoding"] == b"original"


def test_without_room_for_the_original_the_value_then_the_key_are_left_out() -> None:
    raw = b"x" * 800_000
    dead = letter(b"k" * 200_000, raw, SOURCE, "too large", BOUND)
    assert dead.size() <= BOUND and dead.key == b"k" * 200_000
    body = json.loads(dead.value)
    assert body["value_omitted"] == 800_000 and body["offset"] == 41
    assert dict(dead.headers)["encoding"] == b"omitted"
    huge_key = b"k" * 999_000
    dead = letter(huge_key, b"v", SOURCE, "r" * 5000, BOUND)
    assert dead.size() <= BOUND and dead.key is None
    body = json.loads(dead.value)
    assert body["key_omitted"] == 999_000 and len(body["reason"]) == 1003  # shortened
    assert dict(dead.headers)["key-omitted"] == b"999000"
