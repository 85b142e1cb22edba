"""The audit record: one JSON object per line of `<data_dir>/audit.log` (docs/security.md lists
every kind). Building the line is pure; `audit_consents` writes the worker's consent records.

Every record has `ts` (UTC, when it was written), `action` (what), `key` (who: the API key's name,
never its secret; "" when no key was presented or known) and `outcome`; the rest depends on the
action. No record ever holds a secret. Records go to the `persona.audit` logger, which the
processes send to the audit file (api/audit.py) and nowhere else.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from engine.events import CONSENT_PURPOSES, Event

OK = "ok"  # the action was carried out (or accepted and queued: see the record's fields)
REFUSED = "refused"  # 401, 403 or 429
FAILED = "failed"  # the action was asked for and not carried out (a 4xx or 5xx)
NOT_FOUND = "not_found"

audit_log = logging.getLogger("persona.audit")


def utc(now: float | None = None) -> str:
    """`now` (epoch seconds; None: the wall clock) as an RFC 3339 UTC time to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))


def record(action: str, key: str, outcome: str, now: float | None = None, **fields: Any) -> str:
    """One audit line (without the newline): the common fields, then `fields`, keys sorted."""
    entry = {"ts": utc(now), "action": action, "key": key, "outcome": outcome, **fields}
    return json.dumps(entry, sort_keys=True, default=str)


def consent_fields(event: Event) -> dict[str, Any]:
    """What a consent record says of a consent event: whose, which purposes (granted or
    withdrawn), from where (`source`, the `props.text_version` shown), when (event time, ms)."""
    props = event.props
    return {
        "user_id": event.user_id,
        "event_id": event.event_id,
        "event_ts": event.ts,
        "purposes": {p: props[p] for p in CONSENT_PURPOSES if isinstance(props.get(p), bool)},
        "source": event.source,
        "text_version": props.get("text_version"),
    }


def audit_consents(events: Iterable[Event]) -> None:
    """A `consent_applied` record for each consent event the worker folded and wrote: at least
    once (a batch read again after a crash or a rebalance writes it again; `event_id` tells)."""
    for event in events:
        audit_log.info(record("consent_applied", "", OK, **consent_fields(event)))
