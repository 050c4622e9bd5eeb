"""Benchmark the streaming demo generator: seconds, rows, bytes on disk and peak RSS of write_demo_streaming.

    python benchmarks/generate_bench.py --skus 10000 --stores 10 --days 730
Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time


from retail_dagster.core.demo import BLOCK_SKUS, write_demo_streaming


def _bytes_under(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skus", type=int, default=10_000)
    ap.add_argument("--stores", type=int, default=10)
    ap.add_argument("--warehouses", type=int, default=1)
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--block-skus", type=int, default=BLOCK_SKUS)
    ap.add_argument("--out", default=None, help="folder to write to (default: a temporary folder, removed after)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="demo_bench_") as tmp:
        out = args.out or tmp
        rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        rows = write_demo_streaming(out, n_skus=args.skus, n_stores=args.stores, n_warehouses=args.warehouses,
                                    n_days=args.days, seed=args.seed, block_skus=args.block_skus)
        seconds = time.perf_counter() - t0
        size = _bytes_under(out)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    for table, n in rows.items():
        print(f"{table:22s} {n:>13,d} rows")
    fact_rows = sum(rows[t] for t in ("sales", "inventory", "truth/demand"))
    print(f"{args.skus} SKUs x {args.stores} stores x {args.days} days: {seconds:.1f} s, {fact_rows:,d} fact rows, "
          f"{size / 1e9:.2f} GB on disk, peak RSS {peak_rss_mb:,.0f} MB (after imports {rss_before_mb:,.0f} MB)")
    print(json.dumps({"skus": args.skus, "stores": args.stores, "warehouses": args.warehouses, "days": args.days,
                      "block_skus": args.block_skus, "seconds": round(seconds, 2), "rows": rows,
                      "fact_rows": fact_rows, "bytes_on_disk": size, "peak_rss_mb": round(peak_rss_mb, 1),
                      "fact_rows_per_s": round(fact_rows / seconds)}))


if __name__ == "__main__":
    main()
