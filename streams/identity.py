"""Identity in the fold (issue 19 item 2): an `identify` event merges an anonymous id's history
into the user who logged in, once, on the user's partition (docs/streams.md "Identity").

1. The user's partition folds `identify` (user_id = the user, props.previous_id = the anonymous
   id) and sends a signed `merge_request` command keyed by the anonymous id, every time it sees
   the event (a redelivered identify asks again: the steps below are idempotent).
2. The anonymous id's partition folds the request: it stores the alias (`a:` + anonymous id ->
   the user, the anonymous profile as sent, the ids merged into the anonymous id before),
   tombstones the anonymous profile and sends a signed `merge` command keyed by the user with the
   packed profile. A repeated request re-sends the stored one; a request naming another user than
   the stored alias is refused (the first identify wins), so is one that would make a cycle (the
   user's own history was merged into the anonymous id).
3. The user's partition applies `engine.identity.merge` (once per anonymous id and profile
   version: the merge keys are kept in the user's `m:` row beside the ids merged, which an
   erasure of the user reads to erase each of them (profiles, fences, topic records, aliases)).
   An identify whose anonymous id is in the user's `m:` row asks nothing (step 1).

An event of an id that has no profile but an alias is forwarded, re-keyed, to the alias's user (so
is a merge record for such an id); a record forwarded MAX_HOPS times is dead-lettered instead.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgpack

from engine.events import Event, encode
from engine.identity import merge, merge_key
from engine.profile import Profile
from engine.text import id_problem
from streams.delivery import Carrier, record_ms
from streams.keys import alias_of, merged_of, user_key
from streams.triggers import Touched

if TYPE_CHECKING:
    from streams.app import PersonaStreams

MERGE_COMMANDS = ("merge_request", "merge")
MERGED_MAX = 256  # ids merged into one user; more are refused (the erasure reads them all)
MAX_HOPS = 4  # times a record is forwarded along aliases before it is dead-lettered
HOPS_HEADER = "persona-hops"
# A merge record carries the anonymous profile in Base64 JSON: above this many packed bytes the
# profile goes without its dedup memory (the only part that grows near the profile bound), so
# the record stays below the broker's 1 MiB.
PAYLOAD_MAX = 600 * 1024


def check_command(command: dict[str, Any]) -> None:
    """Raise ValueError unless the command is a well-formed merge_request or merge."""
    user_id = command["user_id"]
    if command["command"] == "merge_request":
        into = command["into"]
        if not _an_id(user_id) or not _an_id(into) or into == user_id:
            raise ValueError("merge_request")
        return
    source, hops, merged = command["from"], command["hops"], command["merged"]
    if not _an_id(user_id) or not _an_id(source) or source == user_id:
        raise ValueError("merge")
    if not isinstance(hops, int) or not 0 <= hops <= MAX_HOPS:
        raise ValueError("merge hops")
    if not isinstance(merged, list) or len(merged) > MERGED_MAX:
        raise ValueError("merge ids")
    if not all(_an_id(i) for i in merged) or not isinstance(command["profile"], str | None):
        raise ValueError("merge ids")


def _an_id(value: Any) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 128 and not id_problem(value)


class Identity:
    """The fold's identity steps; `rows` are the batch's alias and merged-ids writes."""

    def __init__(self, streams: PersonaStreams) -> None:
        self.streams = streams
        self.rows: dict[bytes, tuple[bytes | None, int]] = {}  # key -> (value, partition)

    def begin(self) -> None:
        self.rows = {}

    def writes(self) -> Iterator[tuple[int, bytes, bytes | None]]:
        for key, (value, partition) in self.rows.items():
            yield partition, key, value

    def _get(self, key: bytes, partition: int) -> bytes | None:
        if key in self.rows:
            return self.rows[key][0]
        raw = self.streams.profile_db(partition).get(key)
        return raw if isinstance(raw, bytes) else None

    def alias(self, user: bytes, partition: int) -> tuple[str, str | None, list[str]] | None:
        """The user (profiles-table key) `user` was merged into, the profile sent, the ids
        merged into `user` before; None when it has no alias (or an unreadable one)."""
        raw = self._get(alias_of(user), partition)
        if raw is None:
            return None
        try:
            target, payload, merged = msgpack.unpackb(raw, raw=False)
            return str(target), payload, [str(i) for i in merged]
        except Exception:
            return None

    def merged(self, user: bytes, partition: int) -> tuple[list[str], list[int]]:
        """The ids merged into `user` and the merge keys (`engine.identity.merge_key`) of the
        profiles merged: the user's `m:` row."""
        raw = self._get(merged_of(user), partition)
        try:
            ids, keys = ([], []) if raw is None else msgpack.unpackb(raw, raw=False)
            return [str(i) for i in ids], [int(k) for k in keys]
        except Exception:
            return [], []

    def merged_ids(self, user: bytes, partition: int) -> list[str]:
        return self.merged(user, partition)[0]

    # -- step 1 and forwarding: ordinary events ------------------------------------------------
    async def identify(self, event: Event, fevent: Carrier) -> None:
        """Ask the anonymous id's partition for its history, unless it is merged already (the
        browser tag identifies on every page once logged in)."""
        anon = str(event.props["previous_id"])
        if anon in self.merged_ids(user_key(event.user_id), fevent.message.partition):
            return
        body = {"command": "merge_request", "user_id": anon, "into": event.user_id}
        await self._send(anon, body)

    async def forward(self, event: Event, fevent: Carrier, user: bytes) -> bool:
        """Forward the event of an aliased id (one without a profile) to its user."""
        msg = fevent.message
        alias = self.alias(user, msg.partition)
        if alias is None:
            return False
        hops = _hops(getattr(msg, "headers", None))
        if hops >= MAX_HOPS:
            await self.streams._dead_letter(fevent, "identity: alias chain too long (a cycle?)")
            return True
        moved = dataclasses.replace(event, user_id=alias[0])
        headers = [(HOPS_HEADER, b"%d" % (hops + 1))]
        topic, stamp = self.streams.rekeyed_topic, record_ms(msg)  # produced when the original was
        sent = await self.streams.send_raw(
            topic, alias[0].encode(), encode(moved), headers=headers, timestamp_ms=stamp
        )
        self.streams.track(sent)
        self.streams.stats.identity_forwarded += 1
        return True

    # -- steps 2 and 3: commands -----------------------------------------------------------------
    async def command(self, command: dict[str, Any], fevent: Carrier, touched: Touched) -> None:
        try:
            if command["command"] == "merge_request":
                await self._request(command["user_id"], command["into"], fevent, touched)
            else:
                await self._merge(command, fevent, touched)
        except ValueError as exc:  # a stored profile or a sent one that cannot be read
            await self.streams._dead_letter(fevent, f"identity: {exc}")

    async def _request(self, anon: str, into: str, fevent: Carrier, touched: Touched) -> None:
        user, partition = user_key(anon), fevent.message.partition
        alias = self.alias(user, partition)
        if alias is not None:
            if alias[0] != into:
                raise ValueError(f"{anon!r} is merged into another user (the first one wins)")
            await self._send_merge(anon, into, alias[1], alias[2], 0)  # a repeat: sent again
            return
        merged = self.merged_ids(user, partition)
        if into in merged:
            raise ValueError(f"{into!r} was merged into {anon!r}: merging back makes a cycle")
        profile = self.streams._load(user, fevent, touched)
        payload = None if profile is None else _payload(profile)
        self.rows[alias_of(user)] = (msgpack.packb([into, payload, merged]), partition)
        self.rows[merged_of(user)] = (None, partition)
        if profile is not None:
            touched[user] = (None, fevent, True)
        self.streams.triggers.forget(anon)
        await self._send_merge(anon, into, payload, merged, 0)

    async def _merge(self, command: dict[str, Any], fevent: Carrier, touched: Touched) -> None:
        into, source, hops = command["user_id"], command["from"], command["hops"]
        user, partition = user_key(into), fevent.message.partition
        current = self.streams._load(user, fevent, touched)
        alias = None if current is not None else self.alias(user, partition)
        if alias is not None:  # the user was merged into another one: follow
            if hops >= MAX_HOPS:
                raise ValueError("alias chain too long (a cycle?)")
            await self._send_merge(
                source, alias[0], command["profile"], command["merged"], hops + 1
            )
            return
        anon = _unpacked(command["profile"], source)
        ids, keys = self.merged(user, partition)
        key = [] if anon is None else [merge_key(anon)]
        if key and key[0] in keys:  # merged before: a redelivered or repeated merge record
            self.streams.stats.identity_repeated += 1
            return
        new = [i for i in dict.fromkeys([source, *command["merged"]]) if i not in ids and i != into]
        if len(ids) + len(new) > MERGED_MAX or len(keys) >= MERGED_MAX:
            raise ValueError(f"more than {MERGED_MAX} ids merged into one user")
        self.rows[merged_of(user)] = (msgpack.packb([[*ids, *new], [*keys, *key]]), partition)
        updated = current if anon is None else merge(current, anon, into)
        if updated is not None and updated is not current:
            touched[user] = (updated, fevent, True)
            self.streams.stats.identity_merged += 1

    async def _send_merge(
        self, anon: str, into: str, payload: str | None, merged: list[str], hops: int
    ) -> None:
        body = {
            "command": "merge",
            "user_id": into,
            "from": anon,
            "profile": payload,
            "merged": merged,
            "hops": hops,
        }
        await self._send(into, body)

    async def _send(self, key: str, body: dict[str, Any]) -> None:
        value = json.dumps(body).encode()
        self.streams.track(await self.streams.send_command(key.encode(), value))

    # -- erasure ---------------------------------------------------------------------------------
    async def erase(self, user_id: str, fevent: Carrier) -> None:
        """An erasure of `user_id` (in its partition): erase every id merged into it too, and
        drop its own alias and merged-ids rows."""
        user, partition = user_key(user_id), fevent.message.partition
        for anon in self.merged_ids(user, partition):
            await self._send(anon, {"command": "erase", "user_id": anon})
        self.rows[merged_of(user)] = (None, partition)
        self.rows[alias_of(user)] = (None, partition)


def _payload(profile: Profile) -> str:
    packed = profile.pack()
    if len(packed) > PAYLOAD_MAX:
        profile = profile.copy()
        profile.seen = type(profile.seen)()
        packed = profile.pack()
    return base64.b64encode(packed).decode()


def _unpacked(payload: str | None, source: str) -> Profile | None:
    if payload is None:
        return None
    try:
        profile = Profile.unpack(base64.b64decode(payload, validate=True))
    except Exception as exc:
        raise ValueError(f"the merged profile cannot be read: {type(exc).__name__}") from None
    if profile.user_id != source:
        raise ValueError("the merged profile is not the anonymous id's")
    return profile


def _hops(headers: Any) -> int:
    """The record's hop count: 0 without the header; a value other than the 1..2 ASCII digits
    Persona writes (the re-key topic is open to producers: `int()` took "-1000000", " 3",
    "1_0") counts as past the bound."""
    for name, value in headers or ():
        if name == HOPS_HEADER:
            if isinstance(value, bytes) and 1 <= len(value) <= 2 and value.isdigit():
                return int(value)
            return MAX_HOPS
    return 0
