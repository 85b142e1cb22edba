"""The name meant by an unknown one ("did you mean 'deadline_ms'?"), for every message that names
a mistake: a block parameter or a route's field, a template's block, a setting in the file or
the environment, a catalog feed's column.

Pure. One wording (`did_you_mean`) and one cutoff (`CUTOFF`, difflib's own default) for a
suggestion added to a message that is sent anyway. Deciding that a name which would otherwise be
accepted is a misspelling (a `PERSONA_*` variable stops start-up, a feed's column is warned of) is
another question with its own, stricter measure, which such a caller passes to `closest`: at
`CUTOFF` the README's `PERSONA_KEY` would be taken for `PERSONA_TLS_KEY`, and a feed's `rating`
column for Google's `gtin`.
The word is compared by its first `MAX_WORD` characters: difflib's time grows with the product of
the lengths, and the word comes from outside.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable

CUTOFF = 0.6  # difflib's default: `user` -> `user_id` (0.73), `context` -> `context_item` (0.74)
MAX_WORD = 100


def closest(word: str, names: Iterable[str], cutoff: float = CUTOFF) -> str | None:
    """The name of `names` most like `word` when one is at least `cutoff` alike, else None."""
    close = difflib.get_close_matches(word[:MAX_WORD], list(names), n=1, cutoff=cutoff)
    return close[0] if close else None


def meaning(name: str) -> str:
    """The one wording of a suggestion: `did you mean 'deadline_ms'?`."""
    return f"did you mean {name!r}?"


def did_you_mean(
    word: str, names: Iterable[str], shown: Callable[[str], str] = str, end: str = " "
) -> str:
    """`did you mean '<name>'?` and `end` for the name of `names` close to `word` (as `shown`
    writes it: `blocks.<name>`), or "" when none is: for the middle of a message."""
    name = closest(word, names)
    return "" if name is None else meaning(shown(name)) + end
