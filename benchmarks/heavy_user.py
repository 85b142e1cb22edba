"""The fold's per-event cost against the length of a user's history (issue 21 item 1).

Folds the same kind of events into profiles that already remember 10, 1,000, 5,000 and 20,000
event ids (the dedup memory's hard cap), through `engine.profile.apply` and a pack/unpack round
trip per batch as the worker does, and prints microseconds per event and the ratio to the
10-event user. Rounds are interleaved and the best round of each size is kept: the machine is
shared, and noise only ever adds time.

    .venv/bin/python -m benchmarks.heavy_user [--events 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import time

from engine.events import Event, parse
from engine.profile import Profile, apply

SIZES = (10, 1_000, 5_000, 20_000)
T0 = 1_700_000_000_000


def _event(user: str, n: int) -> Event:
    raw = {"event_id": f"{user}-{n}", "type": "product_view", "user_id": user,
           "item_id": f"i{n % 500}", "ts": T0 + n * 1000}  # fmt: skip
    return parse(json.dumps(raw).encode())


def _history(user: str, size: int) -> Profile:
    profile: Profile | None = None
    for n in range(size):
        profile = apply(profile, _event(user, n))
    assert profile is not None
    return profile


def _round(start: bytes, events: list[Event], batch: int) -> float:
    """Seconds to fold `events` in batches: unpack, apply each, pack (the worker's steps)."""
    stored = start
    began = time.perf_counter()
    for i in range(0, len(events), batch):
        profile: Profile = Profile.unpack(stored)
        for event in events[i : i + batch]:
            profile = apply(profile, event)
        stored = profile.pack()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=50, help="events per unpack/pack")
    args = parser.parse_args()
    cases = {}
    for size in SIZES:
        user = f"user{size}"
        later = [_event(user, size + n) for n in range(args.events)]
        cases[size] = (_history(user, size).pack(), later)
    best = {size: float("inf") for size in SIZES}
    for _ in range(args.rounds):
        for size, (stored, later) in cases.items():
            best[size] = min(best[size], _round(stored, later, args.batch))
    base = best[SIZES[0]] / args.events
    print(f"{'remembered ids':>15} {'us/event':>9} {'vs 10':>6}")
    for size in SIZES:
        per = best[size] / args.events
        print(f"{size:>15,} {per * 1e6:>9.1f} {per / base:>6.2f}")


if __name__ == "__main__":
    main()
