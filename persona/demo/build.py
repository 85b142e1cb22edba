"""Build the bundled demo data from the UCI Online Retail file.

    python -m persona.demo.build [SRC] [OUT]

writes `OUT/catalog.jsonl.gz` (every UCI merchandise product, via `engine.sources.uci_catalog`) and
`OUT/orders.csv.gz` (every row of the last `weeks` weeks of the UCI file, unchanged, header
included). Output is byte-for-byte reproducible (gzip without time stamps, sorted products).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path

from engine.sources import UCI_HEADER, open_text, uci_catalog

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SRC = REPO_ROOT.parent / "shared" / "data" / "uci_online_retail" / "online_retail.csv.gz"
DEFAULT_OUT = Path(__file__).resolve().parent
MAX_BYTES = 5 * 1024 * 1024


def _write_gz(path: Path, text: str) -> None:
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(text.encode("utf-8"))


def _last_weeks(src: Path, weeks: int) -> tuple[str, int, str]:
    """The header and rows of the last `weeks` weeks (by InvoiceDate) as CSV text, the row count
    and the first date kept."""
    with open_text(src) as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], [r for r in rows[1:] if r]
    if tuple(header[: len(UCI_HEADER)]) != UCI_HEADER:
        raise ValueError(f"{src} is not a UCI Online Retail CSV")
    newest = max(datetime.fromisoformat(r[4]) for r in body)
    start = (newest - timedelta(weeks=weeks)).replace(hour=0, minute=0, second=0)
    kept = [r for r in body if datetime.fromisoformat(r[4]) >= start]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(kept)
    return buffer.getvalue(), len(kept), start.isoformat(sep=" ")


def build(src: Path, out: Path, weeks: int = 6) -> dict[str, object]:
    """Write catalog.jsonl.gz and orders.csv.gz into `out`; returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    products = uci_catalog(src)
    catalog = "".join(
        json.dumps(p.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n" for p in products
    )
    _write_gz(out / "catalog.jsonl.gz", catalog)
    orders, count, start = _last_weeks(src, weeks)
    _write_gz(out / "orders.csv.gz", orders)
    size = (out / "catalog.jsonl.gz").stat().st_size + (out / "orders.csv.gz").stat().st_size
    if size >= MAX_BYTES:
        raise RuntimeError(f"demo data is {size} bytes, over {MAX_BYTES}: use fewer weeks")
    return {"products": len(products), "order_rows": count, "from": start, "bytes": size}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    src = Path(args[0]) if args else DEFAULT_SRC
    out = Path(args[1]) if len(args) > 1 else DEFAULT_OUT
    print(json.dumps(build(src, out)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
