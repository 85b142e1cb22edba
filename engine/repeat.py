"""Which items may be recommended again after a purchase (issue 17 item 3). Pure.

Recommendations skip what the user already has: every item they bought, viewed or carted
(models/scoring.py `excluded_items`). Consumables are different: coffee, pet food or printer ink
are bought again, so a shop names them in `PERSONA_REPEAT_ITEMS`, `;`-separated entries
`item:<item_id>@<days>` or `category:<category>@<days>` (the category and its sub-categories,
`Pantry` covers `Pantry > Coffee`; case does not matter). Such an item is left out only while it
is in the cart or within `days` of its last purchase (its replenishment window); after that it
may be recommended again, whatever else the user did with it. An item entry wins over a
category entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from engine.catalog import Product

DAY_MS = 86_400_000
MAX_ENTRIES = 1000
MAX_DAYS = 3650
MAX_NAME = 256

Window = Callable[[str], int | None]  # item_id -> its replenishment window in ms, or None


@dataclass(frozen=True)
class RepeatPolicy:
    items: dict[str, int] = field(default_factory=dict)  # item_id -> days
    categories: tuple[tuple[str, int], ...] = ()  # (casefolded category, days)

    def __bool__(self) -> bool:
        return bool(self.items or self.categories)

    def window(self, lookup: Callable[[str], Product | None]) -> Window | None:
        """The replenishment window of each item, its category read through `lookup` (the
        catalog); None when nothing may repeat (the common case costs nothing)."""
        if not self:
            return None

        def days_ms(item_id: str) -> int | None:
            days = self.items.get(item_id)
            if days is None and self.categories:
                product = lookup(item_id)
                days = _category_days(self.categories, product.category) if product else None
            return None if days is None else days * DAY_MS

        return days_ms


NO_REPEATS = RepeatPolicy()


def _category_days(categories: tuple[tuple[str, int], ...], category: str) -> int | None:
    have = category.casefold()
    for wanted, days in categories:
        if have == wanted or have.startswith(wanted + " > "):
            return days
    return None


def parse_repeat(text: str) -> RepeatPolicy:
    """`PERSONA_REPEAT_ITEMS` as a policy, or ValueError saying what is wrong with which entry."""
    items: dict[str, int] = {}
    categories: list[tuple[str, int]] = []
    entries = [e.strip() for e in text.split(";") if e.strip()]
    if len(entries) > MAX_ENTRIES:
        raise ValueError(f"at most {MAX_ENTRIES} entries")
    for entry in entries:
        kind, name, days = _entry(entry)
        if kind == "item":
            items[name] = days
        else:
            categories.append((name.casefold(), days))
    return RepeatPolicy(items, tuple(categories))


def _entry(entry: str) -> tuple[str, str, int]:
    kind, colon, rest = entry.partition(":")
    name, at, days = rest.rpartition("@")
    kind = kind.strip().lower()
    if not colon or kind not in ("item", "category") or not at:
        raise ValueError(f"{entry!r}: write item:<item_id>@<days> or category:<category>@<days>")
    name = name.strip()
    if not 0 < len(name) <= MAX_NAME:
        raise ValueError(f"{entry!r}: the {kind} must be 1..{MAX_NAME} characters")
    if not days.strip().isdigit() or not 0 < int(days) <= MAX_DAYS:
        raise ValueError(f"{entry!r}: days must be a whole number 1..{MAX_DAYS}")
    return kind, name, int(days)
