"""Key spaces of the profiles table.

A partition's RocksDB (and the table's changelog) holds these kinds of rows: Faust's own offset
record (`__faust\\x00offset__`), Persona's input positions (`streams.positions.position_key`)
and the users' profiles. Profiles live under a key space of their own, `u:` + the user id's
UTF-8 bytes, so no user id, whatever it holds, can name a bookkeeping row (before this, a user id
equal to Faust's offset key made the fold unpack the offset record as a profile and stop the
worker). Kafka message keys stay the plain user id: placement (murmur2 over it) does not change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgpack

from streams.positions import BOOKKEEPING_PREFIX, is_position_key

USER_PREFIX = b"u:"
# An erased user's fence: `e:` + user id -> the erasure's time (epoch ms, the erase command's
# record timestamp). Events of the user produced before it are not folded (`streams.app`).
FENCE_PREFIX = b"e:"
# Identity (streams/identity.py): an anonymous id merged into a user, on the anonymous id's
# partition: `a:` + anonymous id -> the alias (the user id, the merged profile as it was sent);
# and on the user's partition `m:` + user id -> every id whose history was merged into the user
# (what an erasure of the user erases too).
ALIAS_PREFIX = b"a:"
MERGED_PREFIX = b"m:"
FAUST_OFFSET_KEY = b"__faust\x00offset__"  # Faust's own row in each table partition
# Marks a profiles partition whose profiles are all under USER_PREFIX (`layout_moves`).
LAYOUT_KEY = BOOKKEEPING_PREFIX + b"\x00persona-layout\xff"
LAYOUT = b"2"


def user_key(user_id: str) -> bytes:
    """The profiles-table key of a user. Never raises: an id that is not valid text (a lone
    surrogate from a URL) still names a row, one no event can have written."""
    return USER_PREFIX + user_id.encode("utf-8", "surrogatepass")


def user_of(key: bytes) -> str | None:
    """The user id of a profiles-table key, or None for a bookkeeping row."""
    if not key.startswith(USER_PREFIX):
        return None
    return key[len(USER_PREFIX) :].decode("utf-8", "surrogatepass")


def is_profile_key(key: bytes) -> bool:
    return key.startswith(USER_PREFIX)


def fence_of(user: bytes) -> bytes:
    """The fence key of a user's profiles-table key (`user_key`)."""
    return FENCE_PREFIX + user[len(USER_PREFIX) :]


def alias_of(user: bytes) -> bytes:
    """The alias key of a user's profiles-table key (`user_key`)."""
    return ALIAS_PREFIX + user[len(USER_PREFIX) :]


def merged_of(user: bytes) -> bytes:
    """The key of the ids merged into a user, from the user's profiles-table key."""
    return MERGED_PREFIX + user[len(USER_PREFIX) :]


def merged_ids_of(raw: Any) -> list[str]:
    """The ids of a user's `m:` row (`streams.identity.Identity.merged`); none for a missing or
    unreadable row."""
    if not isinstance(raw, bytes):
        return []
    try:
        ids, _ = msgpack.unpackb(raw, raw=False)
        return [str(i) for i in ids]
    except Exception:
        return []


def alias_target_of(raw: Any) -> str | None:
    """The user an `a:` row names as the id's target (`streams.identity.Identity.alias`); None
    for a missing or unreadable row."""
    if not isinstance(raw, bytes):
        return None
    try:
        target, _, _ = msgpack.unpackb(raw, raw=False)
        return str(target)
    except Exception:
        return None


def layout_moves(rows: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes | None]]:
    """The writes that bring a profiles partition without LAYOUT_KEY to this layout: before key
    spaces, profiles were stored under the plain user id. Every row but Faust's offset and the
    input positions is such a profile: it moves under `user_key` (the new row, then the old row's
    tombstone), and LAYOUT_KEY comes last. Applied in one RocksDB write batch, so a partition is
    either untouched or wholly moved; an empty partition only gets the mark."""
    moves: list[tuple[bytes, bytes | None]] = []
    for key, value in rows:
        if key in (FAUST_OFFSET_KEY, LAYOUT_KEY) or is_position_key(key):
            continue
        moves += [(USER_PREFIX + key, value), (key, None)]
    moves.append((LAYOUT_KEY, LAYOUT))
    return moves
