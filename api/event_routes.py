"""POST /v1/events, and the body reading and validation POST /v1/collect shares; both refuse
events with a 503 while the process's data dir is full (`watch_data_dir`, engine/room.py)."""

from __future__ import annotations

import json
import json.scanner
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from api.audit import audit
from api.encodings import body_chunks, read_whole
from api.observability import TELEMETRY
from api.shared import CONTENT, EVENT_SKEW_MS, problem
from engine.admission import admit
from engine.audit import consent_fields
from engine.clock import Clock, MonotonicClock
from engine.events import MAX_EVENT_BYTES, Event, InvalidEvent, validate
from engine.room import Room
from engine.text import body_encoding_problem, unique_keys

MAX_EVENTS = 10_000  # events in one POST /v1/events
FULL_RETRY_AFTER = 30  # seconds: the Retry-After of a 503 for a full data dir
ROOM = web.AppKey("data_dir_room", Room)  # set by `watch_data_dir`; absent without a data dir
log = logging.getLogger("persona.api")


def watch_data_dir(
    app: web.Application,
    data_dir: Path,
    free_bytes: Callable[[Path], int],
    min_free: int,
    clock: Clock | None = None,
) -> None:
    """Refuse events (`refuse_when_full`) while `data_dir` has less than `min_free` bytes free,
    and export its free bytes (`persona_data_dir_free_bytes`). The worker and the readers call it
    with their data dir; an app without one (tests) never refuses."""
    room = Room(data_dir, free_bytes, min_free, clock or MonotonicClock())
    app[ROOM] = room
    app[TELEMETRY].room = room


def refuse_when_full(request: web.Request) -> web.Response | None:
    """The 503 for an events request while the data dir is full (read at most once a second),
    else None. The body names no path; the log line (at most one a minute) does."""
    room = request.app.get(ROOM)
    if room is None or not room.full():
        return None
    if room.warn_due():
        log.warning(
            "the data dir %s has %s KiB free, under the %s MiB the worker needs: POST /v1/events "
            "and /v1/collect answer 503 until there is room; free some space",
            room.data_dir,
            (room.free() or 0) // 1024,
            room.min_free >> 20,
        )
    refusal = problem(
        503,
        "Data dir full",
        "the engine's disk is full, so events cannot be kept; nothing was accepted: send them "
        "again later",
    )
    refusal.headers["Retry-After"] = str(FULL_RETRY_AFTER)
    return refusal


def _parse_events_body(text: str, limit: int) -> list[Any]:
    """The items of a JSON array or NDJSON body, read only up to the first item past `limit`
    (the caller answers 413 for it), so a 10 MiB body of tiny items is not parsed whole on the
    event loop for nothing."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            return _parse_array(text, limit)
        except RecursionError:
            raise ValueError("nested too deeply") from None
    items: list[Any] = []
    for n, line in enumerate(_lines(text), 1):
        if line.strip():
            if len(items) > limit:
                break
            try:
                items.append(json.loads(line, object_pairs_hook=unique_keys))
            except json.JSONDecodeError as exc:
                comma = exc.msg == "Extra data" and line[exc.pos :].strip() == ","
                hint = f" ({_COMMA_AFTER})" if comma else ""
                raise ValueError(f"line {n} is not JSON: {exc.msg}{hint}") from None
            except (ValueError, RecursionError):  # too many digits, nested too deeply
                raise ValueError(f"line {n} is not JSON within bounds") from None
    return items


_COMMA_AFTER = "a comma after the event? NDJSON is one event per line, with nothing between them"
_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # str.splitlines's (and \r\n)
_WINDOW = 64 * 1024  # characters split at a time


def _lines(text: str) -> Iterator[str]:
    """`text.splitlines()`, split a window at a time: NDJSON past the event limit stops being
    read at its first line past it, where splitting the whole body first cost ~0.2 s for 10 MiB
    of short lines before the first was parsed. A window's last line is split again with the
    next window unless a line break ends it (a `\r` only when no `\n` follows); a line longer
    than the window widens it."""
    at, end, window = 0, len(text), _WINDOW
    while at < end:
        stop = min(at + window, end)
        lines = text[at:stop].splitlines(keepends=True)
        if stop < end:
            last = lines[-1]
            if last[-1] not in _BREAKS or (last[-1] == "\r" and text[stop] == "\n"):
                lines.pop()  # cut by the window: split again with the next one
            if not lines:
                window *= 2
                continue
        for line in lines:
            at += len(line)
            yield line[:-2] if line.endswith("\r\n") else line[:-1] if line[-1] in _BREAKS else line


# (a JSON value, its end) at an index: what JSONDecoder.raw_decode calls (typeshed types the
# scanner's argument as a scanner; it is the decoder whose options it reads)
# (a key given twice marks its object: the event is refused, engine/events.py)
_SCAN = json.scanner.make_scanner(
    json.JSONDecoder(object_pairs_hook=unique_keys)  # type: ignore[arg-type]
)
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace (str.lstrip's is wider)
_NEXT = re.compile(r"[ \t\n\r]*([,\]]?)[ \t\n\r]*")  # what follows an item, and spaces


def _skip(text: str, at: int) -> int:
    """The index of the first character at or after `at` that is not JSON whitespace."""
    found = _SPACE.match(text, at)
    return found.end() if found else at  # always found: the pattern matches ""


def _parse_array(text: str, limit: int) -> list[Any]:
    """The items of a JSON array, decoded one by one and only up to the first past `limit`;
    for a body that is not one, the JSONDecodeError `json.loads` raises (same message, same
    position: the items are decoded by the same scanner, the array syntax is checked here)."""
    at = _skip(text, 0)
    if not text.startswith("[", at):
        raise json.JSONDecodeError("Expecting value", text, at)
    at = _skip(text, at + 1)
    items: list[Any] = []
    if text.startswith("]", at):
        at += 1
    else:
        scan, after, append = _SCAN, _NEXT.match, items.append
        while True:
            try:
                item, at = scan(text, at)
            except StopIteration as exc:  # a trailing comma too: no value at the "]"
                raise json.JSONDecodeError("Expecting value", text, exc.value) from None
            append(item)
            if len(items) > limit:
                return items  # the rest is never read
            found = after(text, at)
            assert found is not None  # the pattern matches ""
            if not found[1]:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, found.start(1))
            at = found.end()
            if found[1] == "]":
                break
    at = _skip(text, at)
    if at != len(text):
        raise json.JSONDecodeError("Extra data", text, at)
    return items


async def post_events(request: web.Request) -> web.Response:
    refusal = refuse_when_full(request)
    if refusal is not None:
        return refusal
    items = await read_events(request, MAX_EVENTS)
    if isinstance(items, web.Response):
        return items
    return await accept_events(request, items)


async def read_events(
    request: web.Request, limit: int, max_bytes: int | None = None
) -> list[Any] | web.Response:
    """The items of an events body (a JSON array or NDJSON, at most `limit`), or its 4xx problem;
    POST /v1/collect reads its bodies here too (api/collect.py), at most `max_bytes` of them
    (with or without a Content-Length). The body is UTF-8 whatever charset the Content-Type
    names (RFC 8259: JSON has none; decoding with a named one failed with LookupError)."""
    raw = await _read_bounded(request, max_bytes)
    if raw is None:
        return problem(413, "Body too large", f"at most {max_bytes} bytes per request")
    seen = body_encoding_problem(raw)
    if seen is not None:
        return problem(400, "Bad body", f"the body must be UTF-8 JSON or NDJSON: {seen}")
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")  # a BOM: ignored, as RFC 8259 allows
    except UnicodeDecodeError as exc:
        return problem(
            400,
            "Bad body",
            f"the body must be UTF-8 JSON or NDJSON: byte {exc.start} is not UTF-8 "
            "(Latin-1 or Windows-1252 text? send UTF-8)",
        )
    try:
        items = _parse_events_body(text, limit)
    except ValueError as exc:
        return problem(
            400, "Bad body", f"expected a JSON array or NDJSON of events: {exc}{_hint(text, exc)}"
        )
    if len(items) > limit:
        return problem(413, "Too many events", f"at most {limit} events per request")
    return items


def _hint(text: str, error: ValueError) -> str:
    """What an unreadable body looks like, for the common mistakes: one pretty-printed object
    (read as NDJSON, whose line 1 is `{`), an array with a trailing comma."""
    if isinstance(error, json.JSONDecodeError):  # an array's error (NDJSON's name their line)
        before = text[: error.pos].rstrip()
        if (
            error.msg == "Expecting value"
            and text.startswith("]", error.pos)
            and before[-1:] == ","
        ):
            return " (a trailing comma before ']'? JSON allows none)"
        return ""
    if len(text) > MAX_EVENT_BYTES or not text.lstrip().startswith("{") or "\n" not in text.strip():
        return ""  # a body larger than one event is not one event: not parsed again
    try:
        whole = json.loads(text)
    except (ValueError, RecursionError):
        return ""
    if not isinstance(whole, dict):
        return ""
    return (
        " (the body is one JSON object over several lines: NDJSON is one event per line; send "
        "the event on one line, or inside a JSON array)"
    )


async def _read_bounded(request: web.Request, max_bytes: int | None) -> bytes | None:
    """The body, or None when it is longer than `max_bytes`: checked on the Content-Length and
    again as it arrives, since a chunked body has none (the app's client_max_size bounds the
    rest)."""
    if max_bytes is None:
        return await read_whole(request)
    if (request.content_length or 0) > max_bytes:
        return None
    body = bytearray()
    async for chunk in body_chunks(request):  # inflated, a step at a time, when encoded
        body += chunk
        if len(body) > max_bytes:
            return None
    return bytes(body)


Policy = Callable[[Event], str | None]  # why an event is refused here (POST /v1/collect), or None
Stored = Callable[[Event], Event]  # an accepted event as it is produced (POST /v1/collect)


async def accept_events(
    request: web.Request,
    items: list[Any],
    policy: Policy | None = None,
    stored: Stored | None = None,
) -> web.Response:
    """Validate, admit (and check with `policy`: POST /v1/collect's limits), produce the good
    events (each as `stored` makes it, when given); answer 202 with the counts and the reason
    of each refused one."""
    accepted, errors = sort_events(items, request.app[EVENT_SKEW_MS], policy)
    if stored is not None:
        accepted = [stored(event) for event in accepted]
    if accepted:
        await request.app[CONTENT].state.produce(accepted)
        audit_consents(request, accepted)
    return web.json_response(
        {"accepted": len(accepted), "rejected": len(errors), "errors": errors}, status=202
    )


def sort_events(
    items: list[Any], skew_ms: int, policy: Policy | None = None
) -> tuple[list[Event], list[dict[str, Any]]]:
    """(the acceptable events, {index, reason} of the others) of a request body."""
    accepted: list[Event] = []
    errors: list[dict[str, Any]] = []
    wall = int(time.time() * 1000)
    for index, item in enumerate(items):
        try:
            event = validate(item)
        except InvalidEvent as exc:
            errors.append({"index": index, "reason": exc.reason})
            continue
        except Exception as exc:  # unforeseen: still one bad event, never a 500
            errors.append({"index": index, "reason": f"unreadable event: {type(exc).__name__}"})
            continue
        future = admit(event.ts, None, wall, 0, skew_ms)  # no stream time here: future only
        reason = future if future is not None else policy(event) if policy else None
        if reason is not None:
            errors.append({"index": index, "reason": reason})
            continue
        accepted.append(event)
    return accepted, errors


def audit_consents(request: web.Request, events: list[Event]) -> None:
    """A `consent_received` audit record for each consent event accepted (and produced) here:
    who sent it (the key), whose and which purposes; the worker writes `consent_applied` when
    it folds it (streams/app.py)."""
    for event in events:
        if event.type == "consent":
            audit(request, "consent_received", **consent_fields(event))
