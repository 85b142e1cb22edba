"""engine.consent: the purpose every output needs, and consent kept as bounded records per purpose
in which the newest event time wins, whatever order the events arrive in."""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
import pytest

from engine import consent, triggers
from engine.events import InvalidEvent, validate
from engine.profile import Profile, apply, fold

T0 = 1_600_000_000_000


def consent_event(n: int, ts: int, source: str | None = None, **props: Any) -> Any:
    data: dict[str, Any] = {
        "event_id": f"c{n}",
        "type": "consent",
        "user_id": "u",
        "ts": ts,
        "props": props,
    }
    if source:
        data["source"] = source
    return validate(data)


def test_every_trigger_needs_email_and_personalization() -> None:
    kinds = [triggers.ABANDONED_CART, triggers.CHURN_RISK, *triggers.ITEM_KINDS]
    notice = triggers.CONSENT_WITHDRAWN  # needs nothing: it carries the withdrawal
    erased = triggers.USER_ERASED  # needs nothing either: it carries the erasure
    assert sorted(consent.TRIGGER_PURPOSES) == sorted([*kinds, notice, erased])  # all mapped
    withdrew_email = fold([consent_event(1, T0, email=False)])
    withdrew_all = fold([consent_event(1, T0, personalization=False)])
    withdrew_ads = fold([consent_event(1, T0, ads=False)])
    assert withdrew_email and withdrew_all and withdrew_ads
    for kind in kinds:
        assert not consent.trigger_allowed(withdrew_email, kind, True)
        assert not consent.trigger_allowed(withdrew_all, kind, True)
        assert consent.trigger_allowed(withdrew_ads, kind, True)
        assert not consent.trigger_allowed(Profile("silent"), kind, False)  # required
        assert consent.trigger_allowed(Profile("silent"), kind, True)  # granted
    assert consent.triggers_withdrawn(withdrew_email, True)
    assert not consent.triggers_withdrawn(withdrew_ads, True)
    # a trigger not in the table needs personalization only
    assert consent.trigger_allowed(withdrew_email, "some_new_trigger", True)
    assert not consent.trigger_allowed(withdrew_all, "some_new_trigger", True)
    for withdrawn in (withdrew_email, withdrew_all, Profile("silent")):
        assert consent.trigger_allowed(withdrawn, notice, False)
        assert consent.trigger_allowed(withdrawn, erased, False)


def test_a_user_who_never_spoke_gets_the_default_for_every_purpose() -> None:
    said_nothing = [Profile("silent"), Profile("silent", consent={})]  # {}: as None
    spoke = fold([consent_event(1, T0, email=False)])
    assert spoke
    for n in range(len(consent.PURPOSES) + 1):
        for purposes in itertools.combinations(consent.PURPOSES, n):
            for default in (True, False):
                want = all(spoke.consents_to(p, default) for p in purposes)
                assert consent.allows(spoke, purposes, default) is want
                for profile in said_nothing:
                    assert consent.allows(profile, purposes, default) is (default or not purposes)


def test_blocks_keep_their_purposes() -> None:
    withdrew_ads = fold([consent_event(1, T0, ads=False)])
    withdrew_all = fold([consent_event(1, T0, personalization=False)])
    assert withdrew_ads and withdrew_all
    assert consent.block_allowed(withdrew_ads, "html", True)
    assert not consent.block_allowed(withdrew_ads, "json", True)
    assert not consent.block_allowed(withdrew_all, "html", True)
    assert consent.personal(withdrew_ads, True) and not consent.personal(withdrew_all, True)
    table = consent.mapping()
    assert table["block:json"] == ["personalization", "ads"]
    assert table["trigger:abandoned_cart"] == ["personalization", "email"]
    assert table.pop("trigger:consent_withdrawn") == []  # the notice of a withdrawal
    assert table.pop("trigger:user_erased") == []  # the notice of an erasure
    assert all("personalization" in purposes for purposes in table.values())


def test_the_latest_event_time_wins_whatever_the_arrival_order() -> None:
    events = [
        consent_event(1, T0 + 10, "web", email=True, ads=True),
        consent_event(2, T0 + 40, "app", email=False, text_version="v3"),
        consent_event(3, T0 + 20, "web", email=True, personalization=False),
        consent_event(4, T0 + 30, "email", ads=False, personalization=True),
    ]
    outcomes = set()
    for order in itertools.permutations(events):
        p = fold(list(order))
        assert p is not None
        outcomes.add((tuple(sorted(p.consent.items())), tuple(sorted(p.consent_log.items()))))
    assert len(outcomes) == 1  # 24 arrival orders, one result
    p = fold(events)
    assert p is not None and p.consent == {"email": False, "ads": False, "personalization": True}
    assert p.consent_log["email"] == (
        (False, T0 + 40, "app", "v3"),
        (True, T0 + 20, "web", ""),
        (True, T0 + 10, "web", ""),
    )


def test_a_withdrawal_wins_a_tie() -> None:
    grant, withdraw = consent_event(1, T0, email=True), consent_event(2, T0, email=False)
    for order in ([grant, withdraw], [withdraw, grant]):
        p = fold(order)
        assert p is not None and p.consents_to("email", True) is False


def test_the_history_is_bounded_and_an_older_event_cannot_win() -> None:
    events = [consent_event(n, T0 + n * 1000, email=n % 2 == 0) for n in range(25)]
    p = fold(events)
    assert p is not None
    log = p.consent_log["email"]
    assert len(log) == consent.HISTORY
    assert [r[1] for r in log] == [T0 + n * 1000 for n in range(24, 14, -1)]  # newest 10
    assert p.consent == {"email": True}  # n = 24
    late = apply(p, consent_event(99, T0 + 500, email=False))  # older than every kept record
    assert late.consent == {"email": True} and late.consent_log == p.consent_log


def test_text_version_and_source_are_bounded() -> None:
    with pytest.raises(InvalidEvent, match="text_version"):
        consent_event(1, T0, email=True, text_version="x" * 65)
    with pytest.raises(InvalidEvent, match="text_version"):
        consent_event(1, T0, email=True, text_version=3)
    p = fold([consent_event(1, T0, "s" * 64, email=True, text_version="t" * 64)])
    assert p is not None and p.consent_log["email"] == ((True, T0, "s" * 64, "t" * 64),)


def test_records_survive_pack_and_the_export() -> None:
    p = fold(
        [
            validate(
                {"event_id": "v", "type": "product_view", "user_id": "u", "ts": T0, "item_id": "a"}
            ),
            consent_event(1, T0 + 1, "web", email=False, text_version="2026-01"),
        ]
    )
    assert p is not None
    back = Profile.unpack(p.pack())
    assert back == p and back.consent_log["email"] == ((False, T0 + 1, "web", "2026-01"),)
    assert consent.export(back.consent_log) == {
        "email": [{"value": False, "ts": T0 + 1, "source": "web", "text_version": "2026-01"}]
    }


def test_profiles_packed_before_records_still_unpack_and_take_new_events() -> None:
    p = fold(
        [
            validate(
                {"event_id": "v", "type": "add_to_cart", "user_id": "u", "ts": T0, "item_id": "a"}
            ),
        ]
    )
    assert p is not None
    p.consent = {"email": False}  # a value stored by an earlier version: no record, no time
    fields = list(msgpack.unpackb(p.pack(), raw=False))
    records = 25  # the slot of the records (the long history, locale and spend follow)
    assert fields[0] == 3 and fields[records] == {}
    old = msgpack.packb([2, *fields[1:records]], use_bin_type=True)  # format 2: no records
    legacy = Profile.unpack(old)
    assert legacy == p and legacy.consent_log == {}
    assert legacy.consents_to("email", True) is False and legacy.cart == {"a": 1}
    again = apply(legacy, consent_event(1, T0 - 5, email=True))  # any timed event replaces it
    assert again.consent == {"email": True}
    assert again.consent_log["email"] == ((True, T0 - 5, "", ""), (False, 0, "", ""))
    assert consent.export(again.consent_log)["email"][1] == {
        "value": False, "ts": None, "source": None, "text_version": None
    }  # fmt: skip
    with pytest.raises(ValueError, match="unknown profile format"):
        Profile.unpack(msgpack.packb([4, *fields[1:]], use_bin_type=True))
