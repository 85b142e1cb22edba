"""Erasure on append-only topics: which records a tombstone covers. Pure.

At erasure the worker writes a tombstone (the user id as key, no value) to every topic where
Persona writes records about a user (`triggers`, `dead-letters`, `exposures`; streams/erasure.py).
A cluster that compacts those topics drops the older records of the key; one that does not (the
embedded broker) keeps them until retention. Persona's own readers of these topics therefore skip
every record that a later tombstone of its key covers: `live` is that rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

K = TypeVar("K")


def live(records: Sequence[tuple[K, bytes | None]]) -> list[tuple[K, bytes]]:
    """The records of one partition (in log order) that no later tombstone of their key covers,
    tombstones left out. Keys are compared as given (a record without a key is never covered)."""
    last_tombstone: dict[K, int] = {}
    for index, (key, value) in enumerate(records):
        if value is None and key is not None:
            last_tombstone[key] = index
    return [
        (key, value)
        for index, (key, value) in enumerate(records)
        if value is not None and index > last_tombstone.get(key, -1)
    ]
