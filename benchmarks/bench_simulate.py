"""Throughput of `stxcat simulate desi` / `lamost`: spectra per second, peak RSS, disk volume.

Usage: python benchmarks/bench_simulate.py [--desi N] [--lamost N] [--per-pixel M] [--workers W] [--main-only] [--keep]

Each case runs in a fresh subprocess so its peak RSS (ru_maxrss, the largest of the process and its
worker processes) is its own. Prints a table. ``--workers W`` adds the main case (+RES, checksums)
with W worker processes; ``--main-only`` runs only the main case(s).
Target: 100,000 DESI spectra (B, R, Z with RESOLUTION) in a few minutes on 2 cores, memory bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

_CHILD = r"""
import json, resource, sys, time
kind, out, n, per_pixel, res, ck = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1", sys.argv[6] == "1"
workers = int(sys.argv[7])
t = time.perf_counter()
if kind == "desi":
    from catalog_tool.sim.desi import simulate_desi
    kw = {"workers": workers} if workers > 1 else {}  # older versions have no workers argument
    r = simulate_desi(out, pixels=max(1, n // per_pixel), per_pixel=per_pixel, seed=1, resolution=res, checksum=ck, **kw)
else:
    from catalog_tool.sim.lamost import simulate_lamost
    r = simulate_lamost(out, n=n, seed=1, layout="mixed")
dt = time.perf_counter() - t
ru = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
cpu = sum(u.ru_utime + u.ru_stime for u in ru)
rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"nspec": r.nspec, "seconds": dt, "cpu": cpu, "rss_mb": rss / 1024}))
"""


def _du(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--desi", type=int, default=5000, help="DESI spectra (all kinds)")
    ap.add_argument("--per-pixel", type=int, default=500)
    ap.add_argument("--lamost", type=int, default=1000, help="LAMOST spectra (files)")
    ap.add_argument("--workers", type=int, default=1, help="also run the main case with this many workers")
    ap.add_argument("--main-only", action="store_true", help="only DESI +RES with checksums")
    ap.add_argument("--keep", action="store_true", help="keep the output folders")
    args = ap.parse_args()
    cases = [("desi", args.desi, True, True, 1)]
    if args.workers > 1:
        cases.append(("desi", args.desi, True, True, args.workers))
    if not args.main_only:
        cases += [("desi", args.desi, True, False, 1), ("desi", args.desi, False, True, 1),
                  ("lamost", args.lamost, False, True, 1)]
    rows = []
    base = tempfile.mkdtemp(prefix="stxcat-bench-sim-")
    try:
        for kind, n, res, ck, w in cases:
            out = os.path.join(base, f"{kind}-{int(res)}-{int(ck)}-{w}")
            p = subprocess.run([sys.executable, "-c", _CHILD, kind, out, str(n), str(args.per_pixel), str(int(res)),
                                str(int(ck)), str(w)],
                               capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            r = json.loads(p.stdout.strip().splitlines()[-1])
            size = _du(out)
            label = f"{kind}{' +RES' if res else ''}{'' if ck else ' nochecksum'}{f' workers={w}' if w > 1 else ''}"
            rows.append((label, r["nspec"], r["seconds"], r["nspec"] / r["seconds"], 1e3 * r["cpu"] / r["nspec"],
                         r["rss_mb"], size / 1e6, size / r["nspec"] / 1e3))
            if not args.keep:
                shutil.rmtree(out)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(f"{'case':<34}{'spectra':>9}{'seconds':>9}{'spec/s':>9}{'CPU ms/spec':>13}{'peak RSS MB':>13}"
          f"{'disk MB':>10}{'kB/spec':>9}")
    for name, n, s, rate, cpu, rss, mb, kb in rows:
        print(f"{name:<34}{n:>9d}{s:>9.1f}{rate:>9.0f}{cpu:>13.2f}{rss:>13.0f}{mb:>10.0f}{kb:>9.0f}")
    for desi in [r for r in rows if r[0].startswith("desi +RES")]:
        print(f"extrapolated ({desi[0]}): 100,000 DESI spectra -> {100000 / desi[3] / 60:.1f} min, "
              f"{100000 * desi[7] / 1e6:.0f} GB on disk")


if __name__ == "__main__":
    main()
