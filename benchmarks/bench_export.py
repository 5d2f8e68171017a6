"""Export rate of a large VAC to Parquet and to a HATS catalogue (``stxcat export``).

Writes a seeded synthetic VAC of ``--rows`` rows (the generator of ``bench_report.py``: a
Milky-Way-like mix on a DESI-like footprint), then exports it with
:func:`catalog_tool.vac.export.export_vac` to each format in a fresh Python process (so the peak
resident memory is the export's own) and prints seconds, rows/s, output size and peak memory, with
the load average. Needs the ``hats`` extra (``pip install -e ".[hats]"``).

Usage: python benchmarks/bench_export.py [--rows 2000000] [--vac PATH (reuse)] [--formats parquet,hats]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import peak_rss  # beside this script

_CHILD = """
import json, sys, time
t = time.perf_counter()
from catalog_tool.vac.export import export_vac
export_vac(sys.argv[1], sys.argv[2], format=sys.argv[3])
seconds = time.perf_counter() - t
from peak_rss import peak_mib  # this process's own peak (ru_maxrss keeps the parent's)
print(json.dumps({"seconds": seconds, "maxrss_mb": peak_mib()}))
"""


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main() -> None:
    from bench_report import write_synthetic_vac

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--vac", default=None, help="reuse this VAC (written there when missing)")
    ap.add_argument("--formats", default="parquet,hats")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_export_")
    try:
        vac = args.vac or os.path.join(tmp, "vac.fits")
        if not os.path.exists(vac):
            write_synthetic_vac(vac, args.rows, script="bench_export.py")
        import fitsio

        nrows = fitsio.FITS(vac)["STELLAR_PARAMS"].get_nrows()
        print(f"\nstxcat export of {nrows:,} rows ({os.path.getsize(vac) / 2**20:.0f} MiB FITS), "
              f"{os.cpu_count()} cores visible")
        print("| format | seconds | rows/s | output (MiB) | peak RSS (MiB) | load before/after |")
        print("|---|---:|---:|---:|---:|---|")
        for fmt in args.formats.split(","):
            out = os.path.join(tmp, "vac.parquet" if fmt == "parquet" else "vac_hats")
            load0 = os.getloadavg()[0]
            res = subprocess.run(peak_rss.python_c(_CHILD, vac, out, fmt), check=True, capture_output=True,
                                 text=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"| {fmt} | {r['seconds']:.1f} | {nrows / r['seconds']:,.0f} | {_size(out) / 2**20:.0f} | "
                  f"{r['maxrss_mb']:.0f} | {load0:.2f} / {os.getloadavg()[0]:.2f} |", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
