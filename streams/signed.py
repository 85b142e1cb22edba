"""Signed Kafka records: the `models` topic and the commands topic (engine/signing.py).

`RecordSigner` gives the headers that sign a record as one signer (a worker, a reader, the CLI);
`RecordGate` is the consuming edge: it verifies a record's headers and refuses unsigned, badly
signed and replayed (older than the newest accepted for the same key) records, counts them and
logs once per key. The values stay as they were.
"""

from __future__ import annotations

import getpass
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from engine.signing import ClusterKey, Headers, RecordClock, Signed

log = logging.getLogger("persona.signing")

REFUSAL_REASONS = ("unsigned", "bad", "replayed")  # the first word of every refusal's reason
MAX_LOGGED_KEYS = 10_000  # keys whose refusal was logged (then one line per refusal is skipped)


def now_ms() -> int:
    return int(time.time() * 1000)


def cli_signer() -> str:
    """Who signs the CLI's records: `cli:<user>@<host>`."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name for this uid (containers)
        user = "?"
    return f"cli:{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class RecordSigner:
    key: ClusterKey
    name: str  # named in the records and in the audit of whoever folds them

    def headers(self, topic: str, key: bytes | None, value: bytes | None) -> Headers:
        return self.key.sign_record(topic, key, value, self.name, now_ms())


@dataclass
class RecordGate:
    """Verifies the records of one topic (the `key` None: nothing is accepted)."""

    topic: str
    key: ClusterKey | None
    refused: dict[str, int] = field(default_factory=dict)  # reason -> records
    clock: RecordClock = field(default_factory=RecordClock)
    _logged: set[str] = field(default_factory=set)
    log_each: bool = True  # False: the caller logs one summary of `refused` (a CLI's read)

    def admit(
        self, key: bytes | None, value: bytes | None, headers: Any, fresh: bool = False
    ) -> Signed | str:
        """Who signed the record, or why it is refused (counted; logged once per key). With
        `fresh`, a record older than the newest accepted of the same key is refused too."""
        if self.key is None:
            found: Signed | str = "unsigned (no PERSONA_CLUSTER_SECRET here)"
        else:
            found = self.key.verify_record(self.topic, key, value, list(headers or ()))
        name = (key or b"").decode("utf-8", "replace")[:200]
        if fresh and isinstance(found, Signed) and not self.clock.fresh(name, found):
            found = "replayed (older than the accepted record of its key)"
        if isinstance(found, str):
            self._refuse(name, found)
        return found

    def _refuse(self, name: str, reason: str) -> None:
        short = reason.split(" ", 1)[0]
        self.refused[short] = self.refused.get(short, 0) + 1
        if not self.log_each or name in self._logged or len(self._logged) >= MAX_LOGGED_KEYS:
            return
        self._logged.add(name)
        log.error("refused a %s record %r: %s", self.topic, name, reason)

    @property
    def total_refused(self) -> int:
        return sum(self.refused.values())
