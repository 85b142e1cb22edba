"""How much each kind of event says about a user's interest in an item (a leaf: models/recs.py,
models/peers.py and the evaluation share it, so neither imports the other for it)."""

SIGNAL_WEIGHTS: dict[str, float] = {
    "product_view": 1.0,
    "like": 1.0,
    "share": 2.0,
    "add_to_cart": 3.0,
    "purchase": 5.0,
}
