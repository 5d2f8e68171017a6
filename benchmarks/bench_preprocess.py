"""Spectra per second of the preprocessing chain (read + mask + continuum + grid) on DESI and LAMOST.

Usage: python benchmarks/bench_preprocess.py [--rows 4096] [--repeat 5] [--threads 1,2]
                                            [--realdata DIR]

Data: the real spectra of ``../shared/realdata`` tiled to ``--rows`` rows with fresh noise drawn
from their IVAR (DESI: the 4 rows with data of the three coadds, written as one coadd file in a
temporary folder so the read is timed too; LAMOST: the 9 files, one batch with per-row grids).
Rows, per survey:

* ``read``: ``read_coadd(arms=["B"])`` (the only arm the paper's grid needs) / ``read_lamost_files``;
* ``preprocess``: :func:`preprocess_batch` with the paper's settings (only the blue segment fitted);
* ``read+preprocess``: both, the headline figure;
* ``full continuum``: all arms joined, blue and red segments fitted (``fit_all_segments``);
* ``rest frame + LSF``: rest-frame shift and resolution match to R = 1800;
* ``2 threads``: the batch split in two halves preprocessed by two Python threads;
* ``reference``: the plain per-spectrum implementation of tests/preprocess/gaspp_reference.py.

Each configuration runs in a fresh process per ``--threads`` value (OMP_NUM_THREADS and
OPENBLAS_NUM_THREADS set before numpy loads). The median of ``--repeat`` runs is reported, as
spectra per wall-clock second and per CPU second of the process. The machine is shared: figures
vary with the load of other processes.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _tile_desi(realdata: pathlib.Path, folder: pathlib.Path, nrows: int, rng) -> str:
    """One coadd file of ``nrows`` rows from the real rows that hold data, with fresh noise."""
    import fitsio
    import numpy as np

    sources = [("coadd-sv3-dark-26065.fits", [2, 4]), ("coadd-4-80613-thru20210324.fits", [0]),
               ("coadd-special-dark-27247.fits", [0])]
    arms = {}
    fmaps = []
    for name, rows in sources:
        with fitsio.FITS(str(realdata / "desi" / name)) as f:
            fm = f["FIBERMAP"].read(columns=["TARGETID", "TARGET_RA", "TARGET_DEC", "OBJTYPE"])
            fmaps.append(fm[rows])
            for a in "BRZ":
                arms.setdefault(a, {"WAVELENGTH": f[f"{a}_WAVELENGTH"].read()})
                for kind in ("FLUX", "IVAR", "MASK"):
                    arms[a].setdefault(kind, []).append(f[f"{a}_{kind}"].read()[rows])
    take = np.arange(nrows) % sum(len(r) for _, r in sources)
    fm = np.concatenate(fmaps)[take]
    fm["TARGETID"] = np.arange(nrows) + 10**15
    out = folder / "coadd-main-dark-1000.fits"
    with fitsio.FITS(str(out), "rw", clobber=True) as dst:
        dst.write(None, header={"SURVEY": "main", "PROGRAM": "dark", "HPXPIXEL": 1000,
                                "HPXNSIDE": 64, "HPXNEST": True})
        dst.write(fm, extname="FIBERMAP")
        for a, d in arms.items():
            flux = np.concatenate(d["FLUX"])[take]
            ivar = np.concatenate(d["IVAR"])[take]
            mask = np.concatenate(d["MASK"])[take].astype(np.int32)
            sig = 1 / np.sqrt(np.where(ivar > 0, ivar, np.inf))
            flux = (flux + rng.normal(size=flux.shape) * sig).astype(np.float32)
            dst.write(d["WAVELENGTH"], extname=f"{a}_WAVELENGTH")
            dst.write(flux, extname=f"{a}_FLUX")
            dst.write((ivar / 2).astype(np.float32), extname=f"{a}_IVAR")
            dst.write(mask, extname=f"{a}_MASK")
    return str(out)


def _median_rate(fn, nspec, repeat):
    """(spectra per wall-clock second, spectra per CPU second of this process), medians."""
    fn()  # warm up
    ts, cs = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    return nspec / statistics.median(ts), nspec / statistics.median(cs)


def child(args) -> dict:
    """Run every configuration in this process; return {row label: spectra/s}."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    sys.path.insert(0, str(ROOT / "tests" / "preprocess"))
    import gaspp_reference as ref
    from catalog_tool.batch import SpectraBatch
    from catalog_tool.io.desi import read_coadd
    from catalog_tool.io.lamost import read_lamost_files
    from catalog_tool.preprocess import ModelGrid, PreprocessSettings, preprocess_batch

    rng = np.random.default_rng(42)
    grid = ModelGrid()
    paper = PreprocessSettings()
    full = PreprocessSettings(fit_all_segments=True)
    rest = PreprocessSettings(rest_frame=True, lsf_match_R=1800.0)
    res = {}

    def two_threads(batch, settings):
        half = len(batch) // 2
        parts = [batch.take(np.arange(half)), batch.take(np.arange(half, len(batch)))]
        with ThreadPoolExecutor(2) as ex:
            list(ex.map(lambda b: preprocess_batch(b, grid=grid, settings=settings), parts))

    def reference_rate(batch, nref):
        arm = next(iter(batch.arms.values()))
        w2 = arm.wave2d()

        def run():
            for i in range(nref):
                fin = np.isfinite(w2[i]) & (w2[i] > 3670) & (w2[i] < 5730)
                w, f, iv = w2[i][fin], arm.flux[i][fin].astype(float), arm.ivar[i][fin].astype(float)
                bad = ~(iv > 0) | (arm.mask[i][fin] != 0) | ~np.isfinite(f)
                win = ~bad & (w >= grid.range[0]) & (w <= grid.range[1])
                snr = np.median(f[win] * np.sqrt(iv[win])) if win.any() else 0.0
                ref.preprocess_one(w, f, iv, bad, grid.wave, paper, snr)
        return _median_rate(run, nref, max(1, args.repeat // 2))

    with tempfile.TemporaryDirectory(prefix="stxcat-bench-pre-") as tmp:
        path = _tile_desi(args.realdata, pathlib.Path(tmp), args.rows, rng)
        n = args.rows
        b_only = read_coadd(path, arms=["B"], redrock=None)
        all_arms = read_coadd(path, redrock=None)
        with_z = SpectraBatch(arms=b_only.arms, meta={**b_only.meta, "Z": rng.normal(0, 3e-4, n)})
        r = args.repeat
        res["DESI read"] = _median_rate(lambda: read_coadd(path, arms=["B"], redrock=None), n, r)
        res["DESI preprocess"] = _median_rate(
            lambda: preprocess_batch(b_only, grid=grid, settings=paper), n, r)
        res["DESI read+preprocess"] = _median_rate(
            lambda: preprocess_batch(read_coadd(path, arms=["B"], redrock=None), grid=grid,
                                     settings=paper), n, r)
        res["DESI full continuum (B+R+Z)"] = _median_rate(
            lambda: preprocess_batch(all_arms, grid=grid, settings=full), n, r)
        res["DESI rest frame + LSF"] = _median_rate(
            lambda: preprocess_batch(with_z, grid=grid, settings=rest), n, r)
        res["DESI preprocess, 2 threads"] = _median_rate(lambda: two_threads(b_only, paper), n, r)
        res["DESI reference (per spectrum)"] = reference_rate(b_only, args.ref_rows)

    files = sorted(glob.glob(str(args.realdata / "lamost" / "*.fits*")))
    one, _ = read_lamost_files(files)
    idx = np.arange(args.rows) % len(one)
    lam = one.take(idx)
    arm = lam.arms["LRS"]
    sig = 1 / np.sqrt(np.where(arm.ivar > 0, arm.ivar, np.inf))
    arm.flux[:] = arm.flux + (rng.normal(size=arm.flux.shape) * sig).astype(np.float32)
    res["LAMOST read (9 files)"] = _median_rate(lambda: read_lamost_files(files), len(files), r)
    res["LAMOST preprocess"] = _median_rate(
        lambda: preprocess_batch(lam, grid=grid, settings=paper), args.rows, r)
    res["LAMOST full continuum"] = _median_rate(
        lambda: preprocess_batch(lam, grid=grid, settings=full), args.rows, r)
    res["LAMOST preprocess, 2 threads"] = _median_rate(lambda: two_threads(lam, paper), args.rows, r)
    res["LAMOST reference (per spectrum)"] = reference_rate(lam, args.ref_rows)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096, help="spectra per batch")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per configuration")
    ap.add_argument("--ref-rows", type=int, default=20, help="spectra for the per-spectrum reference")
    ap.add_argument("--threads", default="1,2", help="OMP/OPENBLAS thread counts to compare")
    ap.add_argument("--realdata", type=pathlib.Path, default=ROOT.parent / "shared" / "realdata")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    threads = [int(t) for t in args.threads.split(",")]
    results = {}
    for t in threads:
        env = {**os.environ, "OMP_NUM_THREADS": str(t), "OPENBLAS_NUM_THREADS": str(t),
               "MKL_NUM_THREADS": str(t)}
        cmd = [sys.executable, __file__, "--child", "--rows", str(args.rows), "--repeat",
               str(args.repeat), "--ref-rows", str(args.ref_rows), "--realdata", str(args.realdata)]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        results[t] = json.loads(out.strip().splitlines()[-1])
    print(f"{args.rows} spectra per batch; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs (a shared machine: figures vary with others' load)")
    head = f"{'configuration':<34}" + "".join(
        f"{f'{t} thr wall':>13}{f'{t} thr CPU':>12}" for t in threads)
    print(head)
    print("-" * len(head))
    for label in results[threads[0]]:
        print(f"{label:<34}" + "".join(
            f"{results[t][label][0]:>13,.0f}{results[t][label][1]:>12,.0f}" for t in threads))
    print("spectra per second of wall-clock time, and per second of this process's CPU time "
          "(less sensitive to the load; with 2 threads it adds up both cores)")


if __name__ == "__main__":
    main()
