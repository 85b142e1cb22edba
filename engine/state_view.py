"""`StateView`: what the API reads from the stream state, whoever keeps it.

Three implementations: `api.testing.MemoryState` (in memory, for tests and notebooks),
`persona.worker.StreamState` over a worker's live Faust tables, and `streams.readers.SecondaryState`
over the same tables opened as RocksDB secondaries from a reader process. It lives here, in the
core, because both sides name it and neither may import the other (tests/test_layers.py): the API
types its state with it, the streams implement it. `tests/streams/test_state_view_contract.py`
runs one suite over all three.
"""

from __future__ import annotations

from typing import Protocol

from engine.catalog import Product
from engine.events import Event
from engine.profile import Profile


class StateView(Protocol):
    """What the API needs from the stream state (the Faust tables, their readers, or memory)."""

    @property
    def catalog_generation(self) -> int: ...

    def profile(self, user_id: str) -> Profile | None: ...

    def merged_ids(self, user_id: str) -> list[str]: ...  # merged into the user (identity)

    # the user an identify merged this id into (its alias row), as held here; None: none known
    def merged_into(self, user_id: str) -> str | None: ...

    def product(self, item_id: str) -> Product | None: ...

    def popular(self) -> list[str]: ...

    def now_ms(self) -> int: ...

    def ready(self) -> tuple[bool, str]: ...

    def owner_url(self, user_id: str) -> str | None: ...

    # whether this process knows which worker owns the user's partition (itself or another):
    # False while the group rebalances, before its first assignment, or (a reader) while its
    # worker's view names no owner for it; `owner_url` is then None, yet what is held here may
    # not be the owner's (api/privacy.py confirms no erasure from it)
    def owner_known(self, user_id: str) -> bool: ...

    # whether another worker owns some partition (a group of several): False means `owner_url`
    # is None for every user, so a multi-user request skips asking it per user (api/fanout.py)
    def scaled_out(self) -> bool: ...

    def sample_profiles(self, n: int) -> list[Profile]: ...  # up to n, for the pages' picker

    async def produce(self, events: list[Event]) -> None: ...

    async def erase(self, user_id: str) -> None: ...
