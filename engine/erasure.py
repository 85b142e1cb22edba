"""Erasure on append-only topics: which records a tombstone covers. Pure.

At erasure the worker writes a tombstone (the user id as key, no value) to every topic where
Persona writes records about a user (`triggers`, `dead-letters`, `exposures`; streams/erasure.py).
A cluster that compacts those topics drops the older records of the key; one that does not (the
embedded broker) keeps them until retention. Persona's own readers of these topics therefore skip
every record that a later tombstone of its key covers: `live` is that rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from engine.events import CLICK, Event

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


def signed_before_erasure(signed_ms: int, erased_ms: int | None) -> bool:
    """Whether a signed command about a user (erase, merge, merge_request) was signed at or
    before the user's stored erasure time (`erased_ms`, None: never erased): a copy of a record
    that came before the erasure. A signature covers the record's key, value, signer and signing
    time, so a copy produced again verifies. Taken, a copied erase erased whatever the user did
    after the erasure it copies, and a copied merge brought the erased anonymous history back
    (its record carries the profile; the user's record of merged ids went with the erasure).
    A new command is signed after the stored erasure."""
    return erased_ms is not None and signed_ms <= erased_ms


def produced_ms(record_ms: int, event: Event) -> int:
    """When a record counts as produced for the erasure fence: its record time, or for a click
    the time its link was made (`props.link_ms`, engine/clicks.py) when earlier. A link mailed
    before a user's erasure is followed after it: without this the click started a new
    profile for the erased user. The earlier time can only fence more (a forged one stops the
    event, never lets an old one through). The fold's fence (engine/fold.py) and retraining's
    (models/retrain.py `unfenced`) both count so."""
    if event.type == CLICK:
        link = event.props.get("link_ms")
        if type(link) is int and link < record_ms:
            return link
    return record_ms


def unerased_exposures(
    exposures: list[dict[str, Any]],
    user_ids: Iterable[str],
    also: Callable[[str], bool] | None = None,
) -> list[dict[str, Any]]:
    """The queued exposures (not yet written to `exposures`) an erasure leaves: not those of
    `user_ids`, nor those of the ids `also` names (asked once per distinct id queued: an id
    merged into the user that only its alias row, held here, tells of). `exposures` itself when
    none goes."""
    gone = set(user_ids)
    if not exposures or not gone:
        return exposures
    if also is not None:
        queued = {str(e.get("user_id")) for e in exposures} - gone
        gone |= {u for u in queued if also(u)}
    kept = [e for e in exposures if str(e.get("user_id")) not in gone]
    return exposures if len(kept) == len(exposures) else kept
