"""Signatures between Persona processes (engine/signing.py): hops and Kafka records, attacked."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.settings import SettingsError, load_settings
from engine.signing import (
    HOP_WINDOW_MS,
    ClusterKey,
    Hop,
    RecordClock,
    SeenNonces,
    Signed,
    hop_header_problem,
)

SECRET = "c" * 40
KEY = ClusterKey(SECRET)
NOW = 1_800_000_000_000
SCOPES = frozenset({"content:read", "privacy:admin"})


def _hop(body: bytes = b"", target: str = "/v1/users/u1/profile", now: int = NOW) -> str:
    return KEY.hop("GET", target, "sender", SCOPES, body, now)


def test_a_hop_verifies_and_names_the_key_and_its_scopes() -> None:
    hop = KEY.verify_hop(_hop(b"x"), "GET", "/v1/users/u1/profile", b"x", NOW + 5)
    assert isinstance(hop, Hop)
    assert (hop.name, hop.scopes, hop.ts) == ("sender", SCOPES, NOW)


@pytest.mark.parametrize(
    ("method", "target", "body", "now", "reason"),
    [
        ("DELETE", "/v1/users/u1/profile", b"", NOW, "bad hop signature"),  # other method
        ("GET", "/v1/users/u2/profile", b"", NOW, "bad hop signature"),  # other user
        ("GET", "/v1/users/u1/profile?x=1", b"", NOW, "bad hop signature"),  # other query
        ("GET", "/v1/users/u1/profile", b"changed", NOW, "bad hop signature"),  # other body
        ("GET", "/v1/users/u1/profile", b"", NOW + HOP_WINDOW_MS + 1, "expired hop signature"),
        ("GET", "/v1/users/u1/profile", b"", NOW - HOP_WINDOW_MS - 1, "expired hop signature"),
    ],
)
def test_a_hop_is_bound_to_its_request_and_time(
    method: str, target: str, body: bytes, now: int, reason: str
) -> None:
    assert KEY.verify_hop(_hop(), method, target, body, now) == reason


def test_a_hop_of_another_secret_or_with_changed_scopes_is_refused() -> None:
    other = ClusterKey("d" * 40).hop("GET", "/v1/users/u1/profile", "sender", SCOPES, b"", NOW)
    assert KEY.verify_hop(other, "GET", "/v1/users/u1/profile", b"", NOW) == "bad hop signature"
    widened = _hop().replace("s=content:read,privacy:admin", "s=models:admin,privacy:admin")
    assert KEY.verify_hop(widened, "GET", "/v1/users/u1/profile", b"", NOW) == "bad hop signature"
    renamed = _hop().replace("k=c2VuZGVy", "k=YWRtaW4=")  # "sender" -> "admin"
    assert KEY.verify_hop(renamed, "GET", "/v1/users/u1/profile", b"", NOW) == "bad hop signature"


@pytest.mark.parametrize("header", ["", "v1", "v2;t=1", "v1;t=x;n=a;k=a;s=;sig=a", "x" * 5000])
def test_malformed_hop_headers_are_refused(header: str) -> None:
    found = KEY.verify_hop(header, "GET", "/v1/users/u1/profile", b"", NOW)
    assert found in ("malformed hop header", "bad hop signature")


def test_what_the_header_alone_refuses_needs_neither_the_body_nor_the_secret() -> None:
    """api/hops.py refuses these before it reads a body; a signature never verifies past them."""
    forged = ClusterKey("f" * 40).hop("GET", "/", "sender", SCOPES, b"", NOW)
    assert hop_header_problem(forged, NOW) is None  # well formed and fresh: its body decides
    assert hop_header_problem(forged, NOW + HOP_WINDOW_MS + 1) == "expired hop signature"
    assert hop_header_problem("v1;t=1;nonsense", NOW) == "malformed hop header"
    late = NOW + HOP_WINDOW_MS + 1
    assert KEY.verify_hop(forged, "GET", "/", b"", late) == "expired hop signature"


def test_a_replayed_nonce_is_refused_within_the_window() -> None:
    seen = SeenNonces()
    hop = KEY.verify_hop(_hop(), "GET", "/v1/users/u1/profile", b"", NOW)
    assert isinstance(hop, Hop)
    assert seen.first(hop, NOW) and not seen.first(hop, NOW + 1000)
    fresh = KEY.verify_hop(_hop(), "GET", "/v1/users/u1/profile", b"", NOW)
    assert isinstance(fresh, Hop) and seen.first(fresh, NOW)  # a new nonce per hop


def test_records_are_signed_over_topic_key_value_and_signer() -> None:
    headers = KEY.sign_record("models", b"active/recs", b'{"version": "v2"}', "cli:me@h", NOW)
    signed = KEY.verify_record("models", b"active/recs", b'{"version": "v2"}', headers)
    assert signed == Signed("cli:me@h", NOW)
    assert KEY.verify_record("models", b"active/churn", b'{"version": "v2"}', headers) == (
        "bad signature"
    )
    assert KEY.verify_record("models", b"active/recs", b'{"version": "v1"}', headers) == (
        "bad signature"
    )
    assert KEY.verify_record("persona-commands", b"active/recs", b'{"version": "v2"}', headers)
    assert KEY.verify_record("models", b"active/recs", None, headers) == "bad signature"
    forged = [("persona-signer", b"admin"), headers[1]]
    assert KEY.verify_record("models", b"active/recs", b'{"version": "v2"}', forged) == (
        "bad signature"
    )
    assert KEY.verify_record("models", b"k", b"v", None) == "unsigned"
    assert KEY.verify_record("models", b"k", b"v", [("persona-signature", b"v1;t=1;00")]) == (
        "unsigned"
    )


def test_an_older_signed_record_of_a_key_is_refused() -> None:
    clock = RecordClock()
    assert clock.fresh("active/recs", Signed("a", NOW))
    assert clock.fresh("active/recs", Signed("a", NOW + 1))
    assert not clock.fresh("active/recs", Signed("a", NOW))  # a replayed older activation
    assert clock.fresh("active/churn", Signed("a", NOW))


def test_the_cluster_secret_setting(tmp_path: Path) -> None:
    assert load_settings(env={"PERSONA_CLUSTER_SECRET": SECRET}).cluster_secret == SECRET
    with pytest.raises(SettingsError, match="PERSONA_CLUSTER_SECRET has 31 characters") as short:
        load_settings(env={"PERSONA_CLUSTER_SECRET": "s" * 31})
    assert "s" * 31 not in str(short.value)
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    settings = load_settings(env={"PERSONA_CLUSTER_SECRET_FILE": str(path)})
    assert settings.cluster_secret == SECRET and SECRET not in repr(settings)
    path.chmod(0o644)
    with pytest.raises(SettingsError, match=r"PERSONA_CLUSTER_SECRET_FILE.*chmod 600"):
        load_settings(env={"PERSONA_CLUSTER_SECRET_FILE": str(path)})
    path.chmod(0o600)
    with pytest.raises(SettingsError, match="not both"):
        load_settings(
            env={"PERSONA_CLUSTER_SECRET_FILE": str(path), "PERSONA_CLUSTER_SECRET": SECRET}
        )
    assert SECRET not in repr(KEY) and "hidden" in repr(KEY)


# -- kept catalog records (streams/adopt.py) ----------------------------------------------------

ROW = b'{"item_id": "lamp", "price": 5}'


def test_a_kept_mark_verifies_for_exactly_its_record() -> None:
    mark = KEY.kept_mark("catalog", 3, b"lamp", ROW)
    assert mark.startswith(b"v1;") and len(mark) == 3 + 64
    assert KEY.is_kept("catalog", 3, b"lamp", ROW, mark)
    assert KEY.kept_mark("catalog", 3, b"lamp", ROW) == mark  # no time, no nonce: repeatable


@pytest.mark.parametrize(
    ("topic", "partition", "key", "value"),
    [
        ("events", 3, b"lamp", ROW),  # other topic
        ("catalog", 2, b"lamp", ROW),  # other partition
        ("catalog", 3, b"vase", ROW),  # other key
        ("catalog", 3, b"lamp", ROW.replace(b"5", b"4")),  # other value (a new price)
        ("catalog", 3, b"lam", b"p" + ROW),  # the key's end moved into the value
        ("catalog", 3, b"lamp", None),  # a tombstone
        ("catalog", 3, None, ROW),  # no key
    ],
)
def test_a_kept_mark_does_not_verify_for_another_record(
    topic: str, partition: int, key: bytes | None, value: bytes | None
) -> None:
    assert not KEY.is_kept(topic, partition, key, value, KEY.kept_mark("catalog", 3, b"lamp", ROW))


def test_a_forged_or_damaged_kept_mark_does_not_verify() -> None:
    mark = KEY.kept_mark("catalog", 0, b"lamp", ROW)
    flipped = mark[:-1] + (b"0" if mark[-1:] != b"0" else b"1")
    other = ClusterKey("d" * 40).kept_mark("catalog", 0, b"lamp", ROW)
    for forged in (b"1", b"", mark[:-1], mark[:35], mark + b"0", flipped, other, mark[3:],
                   mark.upper(), b"v2;" + mark[3:], mark.decode(), None, 1):  # fmt: skip
        assert not KEY.is_kept("catalog", 0, b"lamp", ROW, forged), forged
