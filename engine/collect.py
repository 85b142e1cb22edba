"""What a publishable key may send (POST /v1/collect, api/collect.py). Pure.

A publishable key sits in web pages, so anybody can read it and send any user id with it. It is
therefore limited to what a visitor's browser reports about its own visit:
- clickstream (`page_view`, `product_view`, `category_view`, `search`) and cart events
  (`add_to_cart`, `remove_from_cart`, `checkout`), and `identify` (the tag's `persona.identify`);
- `purchase` only when the key also has the `events:collect-purchase` scope (a shop that reports
  orders from its server should not let pages invent them);
- `consent` only as a withdrawal (every purpose it names false): a page may always say no for its
  visitor, but granting consent for a user id takes the shop's server (`events:write`), which knows
  who the user is; a key anybody can copy must never grant processing for someone else;
- never social events, and nothing that reads (the key has no other scope to read with);
- with an identify secret (PERSONA_IDENTIFY_SECRET), `identify` only with `props.user_hash`, the
  hex HMAC-SHA256 of the user id under that secret: the shop's server computes it for the user who
  logged in and puts it in the page (as Intercom's identity verification does), so a copied key
  cannot link its own anonymous history, and its later events, to somebody else's user id;
- `identify` only with a `props.previous_id` of the tag's anonymous form (`ANONYMOUS_PREFIX`, then
  the browser's random id): the merge moves the previous id's whole profile into the user and
  deletes it (streams/identity.py), so a key anybody can copy must not name a customer's user id
  there: a logged-in visitor (whose hash the page holds) would take that customer's history, cart
  and purchases into their own profile, and see them in their own blocks;
- every event id it sends is stored as `COLLECTED_PREFIX` + the id (`collected`): a profile
  applies an event id once, whoever sent it, so a page that sent the id the shop's server gives
  an order (`order-1001`) for that customer made the server's purchase a repeat, dropped. Apart,
  the ids still repeat among themselves (a beacon delivered twice is one event). An id longer
  than MAX_COLLECTED_ID (no room for the mark within the contract's 128 characters) is stored as
  the mark, `sha256:` and its SHA-256: the same id the same way, so its repeats still fold once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

from engine.events import CART_TYPES, CLICKSTREAM_TYPES, CONSENT_PURPOSES, IDENTIFY, Event
from engine.text import MAX_ID

COLLECT_TYPES = CLICKSTREAM_TYPES | CART_TYPES | {IDENTIFY, "consent"}
MAX_BYTES = 64 * 1024  # of one request: what a browser lets sendBeacon queue
MAX_EVENTS = 100  # in one request
COLLECT_SCOPE = "events:collect"  # the scope of a publishable key (api/auth.py)
PURCHASE_SCOPE = "events:collect-purchase"  # such a key may send `purchase` too
USER_HASH = "user_hash"  # props of a verified identify (PERSONA_IDENTIFY_SECRET)
ANONYMOUS_PREFIX = "anon-"  # api/sdk/persona.js: the anonymous ids the tag makes
COLLECTED_PREFIX = "collect:"  # before every event id sent with a publishable key (`collected`)
MAX_COLLECTED_ID = MAX_ID - len(COLLECTED_PREFIX)  # characters of such an id as sent


def collect_refusal(
    event: Event, purchases: bool, identify_secret: str | None = None
) -> str | None:
    """Why a publishable key may not send `event` (`purchases`: the key has PURCHASE_SCOPE;
    `identify_secret`: identify needs a user hash), or None when it may."""
    if event.type not in COLLECT_TYPES:
        return (
            f"a publishable key sends clickstream and cart events only, not {event.type!r} "
            "(use an events:write key from your server)"
        )
    if event.type == "purchase" and not purchases:
        return f"purchase events from a publishable key need the {PURCHASE_SCOPE} scope"
    if event.type == "consent" and any(event.props.get(p) is not False for p in _named(event)):
        return (
            "a publishable key may only withdraw consent (every purpose false); grant it "
            "with an events:write key from your server"
        )
    if event.type == IDENTIFY:
        previous = str(event.props.get("previous_id", ""))
        if not previous.startswith(ANONYMOUS_PREFIX):
            return (
                f"a publishable key's identify names an anonymous id ({ANONYMOUS_PREFIX}...) "
                "as props.previous_id, as the tag makes them; merging any other id takes an "
                "events:write key from your server"
            )
        if identify_secret is not None:
            return _unverified(event, identify_secret)
    return None


def collected(event: Event) -> Event:
    """`event` (one `collect_refusal` let through) as it is stored: its id marked as sent
    with a publishable key, so it can never repeat an id the shop's server sends (one too long
    for the mark: its digest, module doc)."""
    event_id = event.event_id
    if len(event_id) > MAX_COLLECTED_ID:
        event_id = "sha256:" + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()
    return dataclasses.replace(event, event_id=COLLECTED_PREFIX + event_id)


def user_hash(secret: str, user_id: str) -> str:
    """What the shop's server puts in the page for `persona.identify(userId, userHash)`."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def _unverified(event: Event, secret: str) -> str | None:
    given = event.props.get(USER_HASH)
    if not isinstance(given, str) or not given:
        return (
            f"identify from a publishable key needs props.{USER_HASH} (PERSONA_IDENTIFY_SECRET "
            "is set): the HMAC-SHA256 of the user id, computed by your server"
        )
    if not hmac.compare_digest(given.lower().encode(), user_hash(secret, event.user_id).encode()):
        return f"props.{USER_HASH} does not match the user id"
    return None


def _named(event: Event) -> list[str]:
    return [purpose for purpose in CONSENT_PURPOSES if purpose in event.props]
