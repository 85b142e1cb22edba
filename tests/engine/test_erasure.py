"""engine.erasure.live: a tombstone covers the earlier records of its key, not later ones."""

from engine.erasure import live, signed_before_erasure


def test_a_tombstone_covers_the_earlier_records_of_its_key_only() -> None:
    records: list[tuple[bytes | None, bytes | None]] = [
        (b"gone", b"1"),
        (b"kept", b"2"),
        (None, b"unkeyed"),
        (b"gone", b"3"),
        (b"gone", None),  # the erasure
        (b"back", None),  # a tombstone of a user with nothing before it
        (b"gone", b"4"),  # written after the erasure (a new history)
        (b"back", b"5"),
    ]
    assert live(records) == [(b"kept", b"2"), (None, b"unkeyed"), (b"gone", b"4"), (b"back", b"5")]


def test_nothing_to_cover() -> None:
    assert live([]) == []
    assert live([(b"a", b"1"), (b"a", b"2")]) == [(b"a", b"1"), (b"a", b"2")]


def test_a_command_signed_at_or_before_the_stored_erasure_is_a_copy() -> None:
    assert not signed_before_erasure(1_000, None)  # never erased
    assert not signed_before_erasure(1_001, 1_000)  # a new erasure, after the user came back
    assert signed_before_erasure(1_000, 1_000)  # the same record again
    assert signed_before_erasure(900, 1_000)  # an older one
