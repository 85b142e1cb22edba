"""Best-seller ranking: the k best items of a stream of (score, item) pairs."""

from __future__ import annotations

import heapq

POPULAR_KEEP = 500  # best-sellers kept by workers and readers


class TopK:
    """The k items with the highest scores, fed one at a time (a min-heap of k entries); ties
    rank the greater item id first, as `sorted(..., reverse=True)` does."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._heap: list[tuple[float, str]] = []

    def add(self, score: float, item: str) -> None:
        entry = (score, item)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        elif entry > self._heap[0]:
            heapq.heapreplace(self._heap, entry)

    def ranked(self) -> list[str]:
        return [item for _, item in sorted(self._heap, reverse=True)]
