"""What reading a POST /v1/events body costs on the event loop (api.event_routes).

Times `_parse_events_body` and the 413 check as `read_events` runs them, on bodies of
- refuse: a 10 MiB JSON array of `{}` items (far past MAX_EVENTS: answered 413);
- refuse ndjson: the same items as NDJSON lines (for comparison);
- accept: a JSON array of MAX_EVENTS realistic events (answered 202), read alone and read then
  validated (`sort_events`, the rest of the route's work before producing them);
- accept ndjson: the same events as NDJSON.
CPU seconds of this process, the best of `--rounds` (noise only adds time).

    .venv/bin/python -m benchmarks.events_body [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from api.event_routes import MAX_EVENTS, _parse_events_body, sort_events

MIB = 1024 * 1024
SKEW_MS = 300_000


def tiny_array(size: int) -> str:
    return "[" + ",".join(["{}"] * (size // 3)) + "]"


def events(n: int) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"e-{i:08d}",
            "user_id": f"user-{i % 977}",
            "type": "product_view",
            "item_id": f"sku-{i % 5003}",
            "ts": 1_700_000_000_000 + i,
            "props": {"price": 19.99, "category": "Home > Kitchen"},
        }
        for i in range(n)
    ]


def best(text: str, rounds: int, validate: bool = False) -> tuple[float, str]:
    """(the best time of `rounds` readings of `text`, what read_events answers); `validate`:
    each reading's items validated too."""
    times: list[float] = []
    outcome = ""
    for _ in range(rounds):
        started = time.process_time()
        try:
            items = _parse_events_body(text, MAX_EVENTS)
            outcome = "413" if len(items) > MAX_EVENTS else f"{len(items)} items"
            if validate and len(items) <= MAX_EVENTS:
                accepted = len(sort_events(items, SKEW_MS)[0])
                outcome += f", {accepted} valid"
        except ValueError as exc:
            outcome = f"400 {exc}"
        times.append(time.process_time() - started)
    return min(times), outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    many = events(MAX_EVENTS)
    bodies = {
        "refuse 10 MiB array of {}": tiny_array(10 * MIB),
        "refuse 10 MiB ndjson of {}": "{}\n" * (10 * MIB // 3),
        f"accept array of {MAX_EVENTS} events": json.dumps(many),
        f"accept ndjson of {MAX_EVENTS} events": "\n".join(json.dumps(e) for e in many),
    }
    runs = [(name, text, False) for name, text in bodies.items()]
    runs.append((f"accept array of {MAX_EVENTS}, validated", json.dumps(many), True))
    for name, text, validate in runs:
        seconds, outcome = best(text, args.rounds, validate)
        size = len(text.encode()) / MIB
        print(f"{name:<40} {size:6.2f} MiB  {seconds * 1000:9.2f} ms  -> {outcome}")


if __name__ == "__main__":
    main()
