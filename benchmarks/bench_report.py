"""Time and memory of ``stxcat report`` on a large synthetic VAC (default 2 million rows).

Writes a seeded VAC with ``write_vac`` (a Milky-Way-like mix: thin and thick disc with two [α/Fe]
sequences, a metal-poor halo, giants and dwarfs, DESI footprint-like sky, S/N-dependent errors,
~10% flagged rows), then runs :func:`catalog_tool.report.make_report` in a fresh Python process
(so its peak resident memory is the report's own, not the generator's) and prints seconds per
step and figure, the total, and the peak memory.

Usage: python benchmarks/bench_report.py [--rows 2000000] [--vac PATH (reuse)] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import peak_rss  # beside this script

from catalog_tool.vac.write import Provenance, write_vac


def make_columns(n: int, rng: np.random.Generator) -> dict:
    """A large synthetic VAC table (vectorised; a few seconds for millions of rows)."""
    import healpy as hp

    comp = rng.choice(3, n, p=[0.7, 0.22, 0.08])  # thin disc, thick disc, halo
    feh = np.select([comp == 0, comp == 1], [rng.normal(-0.15, 0.25, n), rng.normal(-0.6, 0.3, n)],
                    rng.normal(-1.6, 0.5, n))
    alpha = np.select([comp == 0, comp == 1], [0.05 - 0.05 * feh, 0.3 - 0.05 * (feh + 0.6)], 0.3)
    alpha = alpha + rng.normal(0, 0.04, n)
    giant = rng.random(n) < 0.35
    teff = np.where(giant, rng.normal(4800, 300, n), rng.normal(5800, 600, n))
    logg = np.where(giant, 2.5 + (teff - 4800) / 600 + rng.normal(0, 0.3, n), rng.normal(4.3, 0.25, n))
    snr = 10 ** rng.uniform(0.5, 2.0, n)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-20)), np.sin(np.radians(80)), n)))
    hpx = hp.ang2pix(64, ra, dec, lonlat=True, nest=True).astype(np.int32)
    flags = np.zeros(n, np.int64)
    flags |= np.where(snr < 10, 2, 0)
    flags |= np.where(rng.random(n) < 0.05, 1, 0)
    flags |= np.where(rng.random(n) < 0.03, 1 << 6, 0)
    survey = np.where(rng.random(n) < 0.8, "main", "sv3")
    cols = {"TARGETID": 39_627_000_000_000_000 + np.arange(n, dtype=np.int64), "SURVEY": survey,
            "PROGRAM": np.where(rng.random(n) < 0.7, "bright", "dark"), "HEALPIX": hpx,
            "TARGET_RA": ra, "TARGET_DEC": dec, "SNR": snr, "FLAGS": flags}
    for name, v, e0 in (("FEH", feh, 0.05), ("ALPHAFE", alpha, 0.03), ("TEFF", teff, 60.0), ("LOGG", logg, 0.1)):
        err = e0 * (1 + 30 / snr)
        cols[name] = np.where(flags & 1, np.nan, v + rng.normal(0, 1, n) * err)
        cols[f"{name}_ERR"] = np.where(flags & 1, np.nan, err)
    return cols


def write_synthetic_vac(path: str, rows: int, *, script: str) -> None:
    """Write the seeded synthetic VAC of ``rows`` rows (:func:`make_columns`) to ``path``."""
    t = time.perf_counter()
    cols = make_columns(rows, np.random.default_rng(42))
    write_vac(path, cols, provenance=Provenance("bench", "0" * 64, script, "synthetic", date="2026-01-01T00:00:00"))
    del cols
    print(f"wrote {path} ({os.path.getsize(path) / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f} s")


_CHILD = """
import json, sys, time
t = time.perf_counter()
from peak_rss import peak_mib  # this process's own peak (ru_maxrss keeps the parent's)
from catalog_tool.report import make_report
r = make_report(sys.argv[1], sys.argv[2])
total = time.perf_counter() - t
print(json.dumps({"timings": r.timings, "total": total,
                  "maxrss_mb": peak_mib()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--vac", default=None, help="reuse this VAC (written there when missing)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_report_")
    vac = args.vac or os.path.join(tmp, "vac.fits")
    if not os.path.exists(vac):
        write_synthetic_vac(vac, args.rows, script="bench_report.py")
    out = subprocess.run(peak_rss.python_c(_CHILD, vac, os.path.join(tmp, "report")), check=True,
                         capture_output=True, text=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    import fitsio

    nrows = fitsio.FITS(vac)["STELLAR_PARAMS"].get_nrows()
    print(f"\nstxcat report on {nrows:,} rows ({os.cpu_count()} cores visible)")
    print(f"{'step':<18}{'seconds':>9}")
    print("-" * 27)
    for k, v in res["timings"].items():
        print(f"{k:<18}{v:>9.2f}")
    print("-" * 27)
    print(f"{'total (+imports)':<18}{res['total']:>9.2f}")
    print(f"peak resident memory of the report process: {res['maxrss_mb']:.0f} MiB")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if args.vac is None:
            pass
    else:
        print(f"kept {tmp}")


if __name__ == "__main__":
    main()
