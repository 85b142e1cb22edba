"""Checks on text from outside: ids and free text that state and Kafka keys are built from.

Pure. Ids (user, event, item, session ids) are keys: they refuse every control character (C0, DEL,
C1) and every lone surrogate (which no UTF-8 encoder accepts). Free text (titles, comments, search
queries) refuses lone surrogates and the C0 controls other than tab, line feed and carriage return.
"""

from __future__ import annotations

import re

_ID_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_TEXT_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def _describe(char: str) -> str:
    if "\ud800" <= char <= "\udfff":
        return f"a lone surrogate (U+{ord(char):04X})"
    return f"a control character (U+{ord(char):04X})"


def id_problem(value: str) -> str | None:
    """Why `value` cannot be an id, or None when it can."""
    found = _ID_FORBIDDEN.search(value)
    return None if found is None else f"contains {_describe(found.group())}"


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as free text, or None when it can."""
    found = _TEXT_FORBIDDEN.search(value)
    return None if found is None else f"contains {_describe(found.group())}"
