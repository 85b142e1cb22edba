"""Records read back from topics anyone with produce rights could write (a user's export, the
erasure scan of the history) survive JSON nested deeper than Python's stack: before, both raised
a RecursionError out of `json.loads` (the export of that user then failed with a 500)."""

from __future__ import annotations

import base64
import json

from streams.erasure import shown
from streams.history import _erased_user

DEEP = b'{"command": "erase", "user_id": "u", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def test_the_export_shows_a_record_it_cannot_read_as_base64() -> None:
    assert shown(DEEP) == {"value_base64": base64.b64encode(DEEP).decode()}
    assert shown(b'{"a": 1}') == {"a": 1}


def test_the_history_scan_skips_a_command_it_cannot_read() -> None:
    assert _erased_user(DEEP) is None
    assert _erased_user(json.dumps({"command": "erase", "user_id": "u"}).encode()) == "u"
