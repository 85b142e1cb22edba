"""Packed profile sizes with and without the long history (issue 17 item 3), on real data sets.

Folds every event of a data set (benchmarks/datasets.py) into its user's profile with
`engine.profile.apply`, then packs each profile as stored and again with its history emptied,
and prints the median, mean and 90th percentile bytes of both, raw and zlib-compressed one by one
(RocksDB compresses blocks of many profiles, so it does at least as well).

    .venv/bin/python -m benchmarks.profile_size [uci_online_retail rees46_head ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import zlib
from pathlib import Path

from benchmarks.datasets import events_file
from engine.profile import Profile, apply
from engine.sources import read_events

SETS = ("uci_online_retail", "rees46_head")


def profiles(path: Path) -> list[Profile]:
    by_user: dict[str, Profile] = {}
    for event in read_events(path, history=True):
        by_user[event.user_id] = apply(by_user.get(event.user_id), event)
    return list(by_user.values())


def sizes(found: list[Profile], compress: bool, history: bool) -> list[int]:
    out = []
    for p in found:
        q = p if history else _without_history(p)
        raw = q.pack()
        out.append(len(zlib.compress(raw, 6)) if compress else len(raw))
    return out


def _without_history(p: Profile) -> Profile:
    q = p.copy()
    q.history = {}
    return q


def summary(values: list[int]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    median, mean = statistics.median(ordered), statistics.mean(ordered)
    return f"median {median:>6.0f}  mean {mean:>6.0f}  p90 {p90:>6}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", nargs="*", default=list(SETS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            path = events_file(name, Path(tmp))
            if isinstance(path, str):
                print(f"{name}: {path}")
                continue
            found = profiles(path)
            items = statistics.median(len(p.history) for p in found)
            print(f"{name}: {len(found)} users, median {items:.0f} items in the history")
            for compress in (False, True):
                kind = "zlib" if compress else "raw "
                for history in (False, True):
                    label = "with history   " if history else "without history"
                    print(f"  {kind} {label} {summary(sizes(found, compress, history))}")


if __name__ == "__main__":
    main()
