"""A rules document on the `models` topic that `parse_rules` refuses (one an older version, without
today's bounds, accepted and published; or anyone who can sign a record) is logged and ignored by
the worker's registry fold: it keeps serving the previous rules, and so does a worker that starts
again from the records it kept (streams/registry_copy.py: what the supervisor republishes into a
new embedded broker before the worker starts, streams/adopt.py). No broker: the records are
handed to the fold as the topic's reader would."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.rules import MAX_PIN_CHECKS, InvalidRules, parse_rules
from engine.signing import ClusterKey
from models.registry import ModelSet
from models.registry_log import rules_record
from streams.registry import MODELS_TOPIC, RegistryService
from streams.registry_copy import RegistryCopy
from streams.signed import RecordSigner

SIGNER = RecordSigner(ClusterKey("c" * 40), "worker:test")
GOOD = parse_rules(
    {"version": "3", "rules": [{"id": "x", "action": "exclude", "match": {"brand": "acme"}}]}
)


def over_the_bound() -> dict[str, Any]:
    """Two pins listing 1000 items each and 9 exclusions: 22,000 pin checks, over the bound."""
    items = [f"i{n}" for n in range(1000)]
    rules: list[dict[str, Any]] = [
        {"id": f"x{n}", "action": "exclude", "match": {"brand": f"b{n}"}} for n in range(9)
    ]
    rules += [
        {"id": f"p{n}", "action": "pin", "position": 1, "match": {"item_ids": items}}
        for n in range(2)
    ]
    return {"version": "4", "rules": rules}


def message(key: str, value: bytes | None, headers: Any = None) -> SimpleNamespace:
    """A record of the `models` topic as aiokafka hands it over (signed now unless `headers`)."""
    raw = key.encode()
    if headers is None:
        headers = SIGNER.headers(MODELS_TOPIC, raw, value)
    return SimpleNamespace(key=raw, value=value, headers=headers)


def worker(tmp_path: Path, served: list[ModelSet]) -> RegistryService:
    """A worker's registry service, not started: its copy open as `on_start` opens it."""
    service = RegistryService(
        "kafka://127.0.0.1:9",
        tmp_path / "models",
        served.append,
        signer=SIGNER,
        copy=tmp_path / "registry",
    )
    service._copy = RegistryCopy(tmp_path / "registry")
    return service


def test_a_refused_rules_document_is_logged_and_the_previous_rules_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    document = over_the_bound()
    with pytest.raises(InvalidRules, match=f"at most {MAX_PIN_CHECKS} checks"):
        parse_rules(document)
    served: list[ModelSet] = []
    service = worker(tmp_path, served)
    try:
        assert service._fold(message(*rules_record(GOOD)), live=True)
        assert service._build().rules == GOOD
        bad = json.dumps(document).encode()
        with caplog.at_level(logging.ERROR, logger="persona.models"):
            assert not service._fold(message("rules", bad), live=True)
        assert service.registry.rules == GOOD and service._build().rules == GOOD
        said = [r.getMessage() for r in caplog.records if r.name == "persona.models"]
        assert any(
            "ignoring bad models record 'rules': InvalidRules: rules: the pins list 2000 item ids"
            in line
            for line in said
        ), said
    finally:
        assert service._copy is not None
        service._copy.close()

    # the worker starts again on a new embedded broker: the supervisor republishes what it kept
    kept = RegistryCopy(tmp_path / "registry")
    try:
        entries = kept.entries()
    finally:
        kept.close()
    again = worker(tmp_path / "again", [])
    try:
        for entry in entries:
            again._fold(message(entry.key, entry.value, entry.headers), live=False)
        assert again.registry.rules == GOOD and again._build().rules == GOOD
    finally:
        assert again._copy is not None
        again._copy.close()


def test_a_losing_edit_is_not_kept_and_the_kept_records_fold_to_the_winner(
    tmp_path: Path,
) -> None:
    """Two edits of version 4 (models/registry_log.py): the second folded loses. The worker's
    copy (republished into a new embedded broker, in key order, not log order) keeps the winner
    and not the loser, and a tombstone removes what a later winner superseded."""
    first = parse_rules(
        {"version": "4", "rules": [{"id": "w", "action": "exclude", "match": {"brand": "b"}}]}
    )
    second = parse_rules(
        {"version": "4", "rules": [{"id": "l", "action": "exclude", "match": {"brand": "b"}}]}
    )
    won, lost = rules_record(first, "zz"), rules_record(second, "aa")  # the loser sorts first
    service = worker(tmp_path, [])
    try:
        assert service._fold(message(*rules_record(GOOD)), live=True)
        assert service._fold(message(*won), live=True)
        assert not service._fold(message(*lost), live=True)
        assert service.registry.rules == first and service.registry.lost == 1
        assert service._copy is not None
        assert lost[0] not in [key for key, _ in service._copy.records()]
        # a later winner's tombstones: version 3's record leaves the copy (and the topic)
        older = [k for k in service.registry.held["rules"].superseded if "/3/" in k]
        assert len(older) == 1
        assert not service._fold(message(older[0], None), live=True)
        kept = service._copy.records()
        assert [key for key, _ in kept] == [won[0]]
    finally:
        assert service._copy is not None
        service._copy.close()
    again = worker(tmp_path / "again", [])
    try:
        for key, value in kept:
            again._fold(message(key, value), live=False)
        assert again.registry.rules == first
    finally:
        assert again._copy is not None
        again._copy.close()
