"""Consent: which purpose every output that uses a user's data needs, and the record of what the
user said, per purpose. Pure; every consent check in Persona goes through this module.

The mapping (an output needs every purpose listed; a purpose the user never spoke about counts as
`PERSONA_CONSENT_DEFAULT`: `granted` or `required`):

| output                                                        | purposes                   |
|---------------------------------------------------------------|----------------------------|
| html blocks (e-mail), `blocks.*` in `/v1/render`              | personalization            |
| json blocks (ads), the blocks of `/v1/blocks:batch` as json   | personalization, ads       |
| triggers `abandoned_cart`, `churn_risk` (winback),            | personalization, email     |
| `back_in_stock`, `price_drop` and their webhooks (e-mail      |                            |
| automation: each one is an e-mail to the user)                |                            |
| trigger `consent_withdrawn` (the notice of a withdrawal)      | none                       |
| webhook `user_erased` (the notice of an erasure)              | none                       |
| any other trigger                                             | personalization            |
| `/v1/render` `user.*` profile fields                          | personalization            |
| `/profile` scores, recommendations, models, affinities        | personalization            |
| `/explain`                                                    | personalization            |
| exposures (the A/B log) and the A/B variant (model set)       | personalization            |
| the same for a json block (its arm, its exposure)             | personalization, ads       |

Without the purposes an output needs, the output is the one an unknown user gets: the fallback
block, no trigger (and no webhook), `user.known` false with zero/empty fields, empty scores and
recommendations, a 403 for `/explain`, no exposure and the default model set.

Records: each consent event adds, for each purpose it names, a record (value, event time, the
event's `source`, its `props.text_version`) to that purpose's history, kept newest first by event
time and bounded to `HISTORY` records. The current value is the newest record's, whatever order
the events arrived in; at equal event times a withdrawal wins. An event older than every kept
record of a full history changes nothing (it could not win).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.profile import Profile

PERSONALIZATION = "personalization"
EMAIL = "email"
ADS = "ads"
PURPOSES = (PERSONALIZATION, EMAIL, ADS)

PERSONAL = (PERSONALIZATION,)  # render's user.*, /profile scores, /explain, exposures, A/B
BLOCK_PURPOSES = {"html": (PERSONALIZATION,), "json": (PERSONALIZATION, ADS)}
EMAIL_TRIGGER = (PERSONALIZATION, EMAIL)
# engine.triggers' names (it imports engine.profile, which imports this module: no import here)
TRIGGER_PURPOSES: dict[str, tuple[str, ...]] = {
    "abandoned_cart": EMAIL_TRIGGER,
    "churn_risk": EMAIL_TRIGGER,
    "back_in_stock": EMAIL_TRIGGER,
    "price_drop": EMAIL_TRIGGER,
    "consent_withdrawn": (),  # the withdrawal itself: always sent, never taken back
    "user_erased": (),  # an erasure's webhook notice: never taken back by a withdrawal
}
OTHER_TRIGGER = (PERSONALIZATION,)

HISTORY = 10  # records kept per purpose
TEXT_VERSION = 64  # characters of `props.text_version` (engine.events refuses longer ones)

# (value, event time in ms, the event's source or "", props.text_version or "")
Record = tuple[bool, int, str, str]


def allows(profile: Profile, purposes: tuple[str, ...], default: bool) -> bool:
    """Whether the user consents to every one of `purposes` (`default` where they never said)."""
    if not profile.consent:  # never said anything (most users): the default for every purpose
        return bool(default) or not purposes
    return all(profile.consents_to(p, default) for p in purposes)


def personal(profile: Profile, default: bool) -> bool:
    """Whether outputs derived from the profile (render's user.*, scores, explain, exposures,
    the A/B variant) may use it."""
    return profile.consents_to(PERSONALIZATION, default)


def block_allowed(profile: Profile, fmt: str, default: bool) -> bool:
    """Whether a block in format `fmt` may be personalized (json, the ads format, needs ads too)."""
    return allows(profile, BLOCK_PURPOSES.get(fmt, BLOCK_PURPOSES["json"]), default)


def trigger_allowed(profile: Profile, trigger: str, default: bool) -> bool:
    """Whether `trigger` may fire for the user (and reach the topic and the webhooks)."""
    return allows(profile, TRIGGER_PURPOSES.get(trigger, OTHER_TRIGGER), default)


def triggers_withdrawn(profile: Profile, default: bool) -> bool:
    """Whether some trigger may not fire for the user (the e-mail purposes cover every trigger's:
    without them, queued webhooks must be checked)."""
    return not allows(profile, EMAIL_TRIGGER, default)


def current(profile: Profile, default: bool) -> dict[str, bool]:
    """Every purpose's value for the user (`default` where they never said)."""
    return {purpose: profile.consents_to(purpose, default) for purpose in PURPOSES}


def mapping() -> dict[str, list[str]]:
    """The mapping as data: output -> the purposes it needs (documentation and tests)."""
    out = {f"block:{fmt}": list(purposes) for fmt, purposes in BLOCK_PURPOSES.items()}
    out.update({f"trigger:{name}": list(p) for name, p in TRIGGER_PURPOSES.items()})
    out.update({"trigger:other": list(OTHER_TRIGGER)})
    for output in ("render:user", "profile:scores", "explain", "exposures"):
        out[output] = list(PERSONAL)
    return out


def record_of(value: bool, ts: int, source: str | None, props: dict[str, Any]) -> Record:
    """The record one consent event leaves for one purpose."""
    text = props.get("text_version")
    text = text[:TEXT_VERSION] if isinstance(text, str) else ""
    return (bool(value), int(ts), (source or "")[:64], text)


def _order(record: Record) -> tuple[int, bool]:
    return (-record[1], record[0])  # newest first; at equal times a withdrawal first


def merged(history: tuple[Record, ...], record: Record) -> tuple[Record, ...]:
    """`history` (newest first) with `record` in its event-time place, at most HISTORY kept."""
    return tuple(sorted((*history, record), key=_order)[:HISTORY])


def legacy_history(value: bool | None) -> tuple[Record, ...]:
    """The history of a value stored before records were kept (no time: anything replaces it)."""
    return () if value is None else ((bool(value), 0, "", ""),)


def export(history: dict[str, tuple[Record, ...]]) -> dict[str, list[dict[str, Any]]]:
    """The records as the export shows them: purpose -> newest first."""
    return {
        purpose: [
            {"value": v, "ts": ts or None, "source": src or None, "text_version": text or None}
            for v, ts, src, text in records
        ]
        for purpose, records in history.items()
    }
