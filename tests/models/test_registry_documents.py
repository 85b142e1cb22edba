"""The admin documents' fold (models/registry_log.py): of two edits of the same version, the record
first in the log wins in every process, the other is ignored and counted in `lost`; the topic as
compaction leaves it (the last record of each key, offsets in order) folds to the same document;
and the single-key records earlier versions wrote (`rules`, `content_experiments`) still fold.

Before, each record replaced the document whatever its version: the loser of a race, later in the
log, was what every process served (and what compaction kept under the shared key)."""

from __future__ import annotations

import json
import random

from engine.content_experiments import NO_EXPERIMENTS, ContentExperiments
from engine.rules import NO_RULES, Rules, parse_rules, to_document
from models.registry_log import (
    Record,
    RegistryLog,
    document_key,
    experiments_record,
    rules_record,
)


def rules(version: str, rule: str) -> Rules:
    document = {"rules": [{"id": rule, "action": "exclude", "match": {"brand": rule}}]}
    return parse_rules({"version": version, **document})


def fold(records: list[Record]) -> RegistryLog:
    state = RegistryLog()
    for key, value in records:
        state.apply(key, value)
    return state


def compacted(records: list[Record], tombstones: bool = True) -> list[Record]:
    """The log as compaction leaves it: the last record of each key, in offset order; without
    `tombstones`, the tombstones too are gone (after `delete.retention.ms`)."""
    last = {key: n for n, (key, _) in enumerate(records)}
    kept = [r for n, r in enumerate(records) if last[r[0]] == n]
    return kept if tombstones else [r for r in kept if r[1] is not None]


def legacy(document: Rules) -> Record:
    """The rules record as earlier versions wrote it: one key, the last record wins."""
    return "rules", json.dumps(to_document(document)).encode()


def test_of_two_edits_of_one_version_the_first_in_the_log_wins() -> None:
    a = rules_record(rules("1", "a"), "A")
    b = rules_record(rules("1", "b"), "B")
    state = fold([a, b])
    assert state.rules == rules("1", "a") and state.holds(a[0]) and not state.holds(b[0])
    assert state.lost == 1 and state.refused == 0
    assert list(state.held["rules"].superseded) == [b[0]]
    # an edit based on the winner follows; one based on the loser's version is another loser
    c = rules_record(rules("2", "c"), "C")
    late = rules_record(rules("1", "late"), "L")
    state = fold([a, b, c, late])
    assert state.rules == rules("2", "c") and state.lost == 2
    assert list(state.held["rules"].superseded) == [b[0], a[0], late[0]]


def test_the_compacted_log_folds_to_the_same_document() -> None:
    """Versions 1 to 3 with a loser each; the winner of 3 tombstoned what it had folded; a loser
    of 3 came after those tombstones (so it is not tombstoned)."""
    v1, l1 = rules_record(rules("1", "a"), "A"), rules_record(rules("1", "x"), "X")
    v2, l2 = rules_record(rules("2", "b"), "B"), rules_record(rules("2", "y"), "Y")
    v3, l3 = rules_record(rules("3", "c"), "C"), rules_record(rules("3", "z"), "Z")
    log = [legacy(rules("0", "old")), v1, l1, v2, l2, v3]
    log += [(key, None) for key in fold(log).held["rules"].superseded]  # the winner of 3's
    log.append(l3)
    whole = fold(log)
    assert whole.rules == rules("3", "c") and whole.holds(v3[0])
    for after in (compacted(log), compacted(log, tombstones=False)):
        assert [k for k, v in after if k.startswith("doc/") and v] == [v3[0], l3[0]]
        again = fold(after)
        assert again.rules == whole.rules and again.holds(v3[0]) and again.lost == 1


def test_random_races_fold_the_same_before_and_after_compaction() -> None:
    """Writers that each put version (what they have folded)+1 after folding a random prefix
    of the log, the winners tombstoning what they superseded: every version has one winner
    (the first of its records), and compaction changes nothing served."""
    for seed in range(30):
        rng = random.Random(seed)
        log: list[Record] = []
        for n in range(40):
            seen = fold(log[: rng.randint(max(0, len(log) - 4), len(log))])
            version = str(int(seen.rules.version) + 1)
            record = rules_record(rules(version, f"r{n}"), f"n{n}")
            log.append(record)
            folded = fold(log)
            if folded.holds(record[0]) and rng.random() < 0.7:
                log += [(key, None) for key in folded.held["rules"].superseded]
        whole = fold(log)
        firsts: dict[str, str] = {}
        for key, value in log:
            if value is not None:
                firsts.setdefault(key.split("/")[2], key)
        top = max(firsts, key=int)
        assert whole.holds(firsts[top]) and whole.rules.version == top
        for after in (compacted(log), compacted(log, tombstones=False)):
            again = fold(after)
            assert again.rules == whole.rules and again.holds(firsts[top]), seed


def test_the_single_key_of_earlier_versions_still_folds() -> None:
    """State written before: the last `rules` record wins (compaction keeps only it) and the
    versions go on from it; once a versioned record is accepted, the old key is ignored."""
    state = fold([legacy(rules("4", "a")), legacy(rules("5", "b"))])
    assert state.rules == rules("5", "b") and state.held["rules"].number == 5
    v5 = rules_record(rules("5", "c"), "C")  # based on 4: too late
    v6 = rules_record(rules("6", "d"), "D")
    state = fold([legacy(rules("4", "a")), legacy(rules("5", "b")), v5, v6])
    assert state.rules == rules("6", "d") and state.lost == 1
    state.apply(*legacy(rules("7", "e")))  # an older process's, after the versioned ones
    assert state.rules == rules("6", "d") and state.lost == 2
    assert state.apply("rules", None) == "rules" and state.rules == NO_RULES  # clears, as before
    assert state.apply(*rules_record(rules("1", "f"))) == "rules"  # versions start again
    assert state.rules == rules("1", "f")

    experiments = ContentExperiments("3")
    old = ("content_experiments", json.dumps({"version": "3", "experiments": []}).encode())
    state = fold([old])
    assert state.content_experiments == experiments
    assert state.apply(*experiments_record(ContentExperiments("3"))) is None  # not above 3
    assert state.apply(*experiments_record(ContentExperiments("4"), "E")) == "content_experiments"
    assert state.content_experiments == ContentExperiments("4")
    assert state.holds(document_key("content_experiments", "4", "E"))
    assert state.apply("content_experiments", None) == "content_experiments"
    assert state.content_experiments == NO_EXPERIMENTS


def test_bad_document_records_are_refused() -> None:
    good = rules_record(rules("2", "a"), "A")
    state = fold([good])
    bad = [
        ("doc/rules/3", good[1]),  # no nonce
        ("doc/menus/3/x", good[1]),  # no such document
        ("doc/rules/0/x", json.dumps({"version": "0", "rules": []}).encode()),
        ("doc/rules/3/x", good[1]),  # the key says 3, the document 2
        ("doc/rules/3/x", b"{not json"),
    ]
    for key, value in bad:
        assert state.apply(key, value) is None
    assert state.refused == len(bad) and state.lost == 0 and state.rules == rules("2", "a")
    assert state.apply("doc/rules/9/unknown", None) is None  # a tombstone: nothing changes
    assert state.rules == rules("2", "a") and state.refused == len(bad)
