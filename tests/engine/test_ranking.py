"""The best-seller ranking (engine.ranking.TopK) equals a full sort."""

from __future__ import annotations

import random

from engine.ranking import TopK


def test_topk_equals_a_full_sort_ties_included() -> None:
    rng = random.Random(3)
    entries = [(float(rng.randint(0, 40)), f"item-{n}") for n in range(2000)]
    for k in (1, 7, 500, 5000):
        top = TopK(k)
        for score, item in entries:
            top.add(score, item)
        expected = [item for _, item in sorted(entries, reverse=True)[:k]]
        assert top.ranked() == expected
