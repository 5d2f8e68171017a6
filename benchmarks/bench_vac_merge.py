"""Merge speed and memory of VAC part files (catalog_tool.vac.write.merge_parts).

Writes P part files of synthetic rows, merges them, and prints rows/s and the peak of memory
allocated during the merge (tracemalloc: numpy buffers included) for two release sizes, to show
that memory is bounded by the chunk size plus ~30 bytes a row of keys, not by the table.

Usage: python benchmarks/bench_vac_merge.py [--sizes 100000 400000] [--parts 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from catalog_tool.vac import datamodel as dm
from catalog_tool.vac import write as w


def make_part(n: int, rng: np.random.Generator, pixel_lo: int) -> dict:
    return {
        "TARGETID": rng.integers(0, 2 * n, n) + 39_627_000_000_000_000,
        "SURVEY": np.full(n, "main"), "PROGRAM": np.full(n, "dark"),
        "HEALPIX": rng.integers(pixel_lo, pixel_lo + 50, n).astype(np.int32),
        "TARGET_RA": rng.uniform(0, 360, n), "TARGET_DEC": rng.uniform(-20, 80, n),
        "FEH": rng.normal(size=n), "TEFF": rng.normal(5500, 500, n), "SNR": rng.uniform(1, 80, n),
        "FLAGS": rng.integers(0, 4, n), "SOURCE": np.full(n, "coadd-main-dark-10016.fits"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 400_000])
    ap.add_argument("--parts", type=int, default=20)
    ap.add_argument("--chunk-rows", type=int, default=w.DEFAULT_CHUNK_ROWS)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    prov = w.Provenance("bench", "0" * 64, "bench_vac_merge.py", "synthetic", date="2026-01-01T00:00:00")
    rowbytes = dm.table_dtype().itemsize
    print(f"{'rows':>9} {'parts':>5} {'MB table':>8} {'write parts s':>13} {'merge s':>8} "
          f"{'rows/s':>9} {'peak MB':>8}")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            per = n // args.parts
            t0 = time.perf_counter()
            parts = []
            for i in range(args.parts):
                path = Path(tmp) / f"part-{i:05d}.fits"
                w.write_vac(path, make_part(per, rng, 50 * i), provenance=prov, errors=[],
                            compute_primary=False)
                parts.append(path)
            t_write = time.perf_counter() - t0
            tracemalloc.start()
            t0 = time.perf_counter()
            res = w.merge_parts(parts, Path(tmp) / "vac.fits", provenance=prov, chunk_rows=args.chunk_rows)
            t_merge = time.perf_counter() - t0
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(f"{res.nrows:>9} {args.parts:>5} {res.nrows * rowbytes / 1e6:>8.1f} {t_write:>13.2f} "
                  f"{t_merge:>8.2f} {res.nrows / t_merge:>9.0f} {peak / 1e6:>8.1f}")


if __name__ == "__main__":
    main()
