"""Peak memory of reading a large catalog feed (issue 19 item 3): bounded, whatever its size.

Writes a Google Merchant Center feed of about `--mb` megabytes (RSS XML or Google TSV) into a
temporary directory, then reads every product of it with `engine.catalog_formats.read_products`
in a fresh child process per size and prints the child's peak RSS. Bounded memory shows as the
same peak for every size (the products are only counted, as `persona catalog import` streams
them to the broker; the import's --full adds a set of the feed's item ids on top).

    .venv/bin/python -m benchmarks.catalog_memory --mb 50 500 --format google-xml tsv
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ITEM = (
    "<item><g:id>sku-{n}</g:id><g:title>Product number {n} with a fairly ordinary title</g:title>"
    "<g:description>{text}</g:description><g:link>https://shop.example.com/p/{n}</g:link>"
    "<g:image_link>https://shop.example.com/i/{n}.jpg</g:image_link>"
    "<g:availability>in_stock</g:availability><g:price>{n_mod}.99 EUR</g:price>"
    "<g:brand>Acme</g:brand><g:gtin>4006381333931</g:gtin><g:custom_label_0>x</g:custom_label_0>"
    "</item>\n"
)
TSV_HEADER = "id\ttitle\tdescription\tlink\timage_link\tavailability\tprice\tbrand\tgtin\n"
TSV_ROW = (
    "sku-{n}\tProduct number {n} with a fairly ordinary title\t{text}\t"
    "https://shop.example.com/p/{n}\thttps://shop.example.com/i/{n}.jpg\tin_stock\t"
    "{n_mod}.99 EUR\tAcme\t4006381333931\n"
)
TEXT = "A description of the product that says what it is and why one would buy it. " * 4


def write_feed(path: Path, fmt: str, megabytes: float) -> int:
    """A feed of about `megabytes` MB at `path`; returns its number of products."""
    target = int(megabytes * 1_000_000)
    n = 0
    with path.open("w", encoding="utf-8") as out:
        if fmt == "google-xml":
            out.write('<?xml version="1.0"?>\n<rss version="2.0" xmlns:g="http://base.google.com')
            out.write('/ns/1.0"><channel><title>Big</title>\n')
        else:
            out.write(TSV_HEADER)
        template = ITEM if fmt == "google-xml" else TSV_ROW
        while out.tell() < target:
            out.write(
                "".join(
                    template.format(n=n + i, n_mod=(n + i) % 500, text=TEXT) for i in range(1000)
                )
            )
            n += 1000
        if fmt == "google-xml":
            out.write("</channel></rss>\n")
    return n


def measure(path: Path, fmt: str) -> dict[str, float]:
    """In this process: read every product; peak RSS and time."""
    from engine.catalog_formats import read_products

    started = time.monotonic()
    rejected = 0

    def reject(_line: int, _reason: str) -> None:
        nonlocal rejected
        rejected += 1

    with path.open("rb") as source:
        count = sum(1 for _ in read_products(source, fmt, None, reject))
    return {
        "products": count,
        "rejected": rejected,
        "seconds": round(time.monotonic() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, nargs="+", default=[50.0, 500.0])
    parser.add_argument("--format", nargs="+", default=["google-xml", "tsv"])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), args.child[1])))
        return
    with tempfile.TemporaryDirectory(prefix="persona-feed-bench-") as tmp:
        for fmt in args.format:
            for mb in args.mb:
                path = Path(tmp) / f"feed-{mb:g}.{fmt}"
                written = write_feed(path, fmt, mb)
                child = [
                    sys.executable,
                    "-m",
                    "benchmarks.catalog_memory",
                    "--child",
                    str(path),
                    fmt,
                ]
                result = json.loads(subprocess.check_output(child, cwd=ROOT))
                size = path.stat().st_size / 1e6
                print(
                    f"{fmt:10s} {size:8.0f} MB {written:9d} rows -> {json.dumps(result)}",
                    flush=True,
                )
                path.unlink()


if __name__ == "__main__":
    main()
