"""Small synthetic event sets for the model tests."""

from __future__ import annotations

from engine.events import Event

DAY = 86_400_000
T0 = 1_700_000_000_000


def purchase(user: str, item: str, ts: int, order: str = "", price: float = 5.0) -> Event:
    order = order or f"{user}-{ts}"
    return Event(
        event_id=f"{user}-{item}-{ts}",
        type="purchase",
        user_id=user,
        ts=ts,
        item_id=item,
        price=price,
        currency="EUR",
        session_id=order,
        props={"order_id": order},
    )


def view(user: str, item: str, ts: int) -> Event:
    return Event(
        event_id=f"v-{user}-{item}-{ts}", type="product_view", user_id=user, ts=ts, item_id=item
    )


def churn_events(n_users: int = 200) -> list[Event]:
    """Loyal users (even) buy every 10 days for a year; lapsing users (odd) buy a few times early
    and stop. Everyone's history precedes the default cut-off; only loyal users buy after it."""
    events: list[Event] = []
    for u in range(n_users):
        user = f"u{u}"
        if u % 2 == 0:
            for day in range(0, 360, 10 + u % 5):
                events.append(purchase(user, f"i{(u + day) % 7}", T0 + day * DAY + u))
        else:
            for day in range(0, 30 + u % 40, 15):
                events.append(purchase(user, f"i{u % 7}", T0 + day * DAY + u))
    return sorted(events, key=lambda e: e.ts)


def basket_events() -> list[Event]:
    """Items co-bought in fixed pairs: a<->a2, b<->b2, c<->c2; 'pop' bought by everyone."""
    events: list[Event] = []
    for u in range(30):
        user = f"b{u}"
        ts = T0 + u * 1000
        for pair in ("a", "b", "c"):
            if u % 3 == "abc".index(pair):
                events.append(purchase(user, pair, ts, "o1"))
                events.append(purchase(user, pair + "2", ts, "o1"))
        events.append(purchase(user, "pop", ts + 1, "o2"))
        if u < 20:
            events.append(purchase(user, "pop2", ts + 1, "o2"))
        if u < 5:
            events.append(view(user, "pop3", ts + 2))
    return events
