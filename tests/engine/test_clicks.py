"""Click tokens (engine/clicks.py): only this shop's Persona makes them, nothing in them can be
changed, and the click event they record is a valid event, one per link and minute."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.clicks import (
    MAX_AGE_DAYS,
    MAX_TOKEN,
    MINUTE_MS,
    Click,
    InvalidToken,
    _b64,
    click_event,
    click_key,
    is_fresh,
    make_token,
    read_token,
)
from engine.events import validate

KEY = click_key("c" * 32)
NOW = 1_790_000_000_000
CLICK = Click("user-\u00e9", "recommendations", "b", "85123A", NOW // MINUTE_MS)


def test_a_token_names_its_click() -> None:
    token = make_token(KEY, CLICK)
    assert read_token(KEY, token) == CLICK
    assert len(token) < 200 and "/" not in token and "+" not in token and "=" not in token


def test_the_key_is_derived_and_not_the_cluster_secret() -> None:
    assert ("c" * 32).encode() != KEY and len(KEY) == 32
    assert click_key("d" * 32) != KEY


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.replace(t[3], "A" if t[3] != "A" else "B", 1),  # the payload
        lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"),  # the signature
        lambda t: t.split(".")[0] + ".",  # no signature
        lambda t: t.split(".")[0],  # no dot
        lambda t: t + ".x",  # two dots
        lambda t: "\u00e9" + t,  # not base64
        lambda t: "A" * (MAX_TOKEN + 1),  # too long
    ],
)
def test_a_changed_token_is_refused(change: Callable[[str], str]) -> None:
    with pytest.raises(InvalidToken):
        read_token(KEY, change(make_token(KEY, CLICK)))


def _other_spellings(token: str) -> list[str]:
    """Strings base64 reads as the same bytes: the signature's last character with its unused
    low bits set otherwise, a character outside the alphabet inside, padding added."""
    payload, signature = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])  # 16 bytes: 22 characters, the last holds 2 bits + 4
    spare = alphabet[last ^ 1]
    return [
        f"{payload}.{signature[:-1]}{spare}",
        f"{payload[:4]}!{payload[4:]}.{signature}",
        f"{payload}.{signature}==",
    ]


def test_one_click_has_one_token_spelling() -> None:
    """Base64 decoding ignores a signature's unused bits and characters outside its alphabet:
    a changed last character still redirected and counted the click, so many strings named one
    signed link. Only the spelling the engine writes is read."""
    token = make_token(KEY, CLICK)
    for other in _other_spellings(token):
        assert other != token
        with pytest.raises(InvalidToken, match="not a click token"):
            read_token(KEY, other)


def test_another_shops_token_is_refused() -> None:
    with pytest.raises(InvalidToken, match="signature does not match"):
        read_token(KEY, make_token(click_key("e" * 32), CLICK))


def test_a_signed_but_malformed_payload_is_refused() -> None:
    """Signed by the right key (as if the key leaked to a careless writer), the payload is still
    checked: versions, types and lengths."""
    from engine.clicks import _sign

    for payload in (
        b'[2,"u","b","v","i",1]',
        b'[1,"u","b","v","i",true]',
        b'[1,"","b","v","i",1]',
        b"{}",
        b"not json",
        b'[1,"' + b"u" * 129 + b'","b","v","i",1]',
    ):
        token = f"{_b64(payload)}.{_b64(_sign(KEY, payload))}"
        with pytest.raises(InvalidToken):
            read_token(KEY, token)


def test_a_link_counts_for_max_age_days() -> None:
    made = NOW // MINUTE_MS
    assert is_fresh(CLICK, NOW + MAX_AGE_DAYS * 86_400_000)
    assert not is_fresh(Click("u", "b", "v", "i", made), NOW + (MAX_AGE_DAYS + 1) * 86_400_000)


def test_the_click_event_is_valid_and_one_per_link_and_minute() -> None:
    event = validate(click_event(CLICK, NOW))
    assert (event.type, event.user_id, event.item_id, event.ts) == (
        "click",
        CLICK.user_id,
        "85123A",
        NOW,
    )
    link_ms = CLICK.minute * MINUTE_MS  # when the link was made: the erasure fence's time
    assert event.props == {"block": "recommendations", "variant": "b", "link_ms": link_ms}
    assert click_event(CLICK, NOW + 1_000)["event_id"] == event.event_id
    assert click_event(CLICK, NOW + MINUTE_MS)["event_id"] != event.event_id
    other = Click(CLICK.user_id, "winback", "b", "85123A", CLICK.minute)
    assert click_event(other, NOW)["event_id"] != event.event_id
