"""Spectra per second reading the B arm of DESI coadds: ``read_coadd`` against a bare fitsio read.

Usage: python benchmarks/bench_read_desi.py [--rows 500] [--repeat 30] [--desi-dir DIR]

The floor opens the file with fitsio and reads B_FLUX, B_IVAR and B_MASK (keeping the three
arrays, as a reader must), nothing else.
``read_coadd(arms=["B"])`` also reads B_WAVELENGTH and the FIBERMAP columns it needs, checks the
file's structure, and (with ``redrock="auto"``) joins the sibling redrock file.

Two data sets: a synthetic coadd of ``--rows`` rows made in a temporary folder by replicating the
rows of the real EDR coadd (all 19 HDUs, RESOLUTION included, so the B HDUs sit where they do in
a real file), with a matching redrock file; and the real 5-row EDR coadd, where per-file overhead
dominates. Nothing is written outside the temporary folder. Reads are interleaved (floor, ours,
ours+redrock, ...) and the median time per read is reported, so background load hits all alike.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time

import fitsio
import numpy as np

from catalog_tool.io.desi import read_coadd

ROOT = pathlib.Path(__file__).resolve().parent.parent
EDR = "coadd-sv3-dark-26065.fits"


def make_synthetic(src: pathlib.Path, folder: pathlib.Path, nrows: int) -> pathlib.Path:
    """Write ``coadd-sv3-dark-26065.fits`` with ``nrows`` rows (and its redrock) into ``folder``."""
    out = folder / src.name
    with fitsio.FITS(str(src)) as f:
        nsrc = f["FIBERMAP"].get_nrows()
        take = np.arange(nrows) % nsrc
        with fitsio.FITS(str(out), "rw", clobber=True) as dst:
            dst.write(None, header=f[0].read_header())
            for hdu in f[1:]:
                name = hdu.get_extname()
                data = hdu.read()
                if hdu.get_exttype() == "IMAGE_HDU":
                    if data.ndim > 1:
                        data = data[take]
                    dst.write(data, extname=name)
                else:
                    if name in ("FIBERMAP", "SCORES"):
                        data = data[take]
                        data["TARGETID"] = np.arange(nrows) + 10**15
                    dst.write(data, extname=name)
    rr = np.zeros(nrows, dtype=[("TARGETID", "i8"), ("Z", "f8"), ("ZERR", "f8"), ("ZWARN", "i8"),
                                ("SPECTYPE", "U6"), ("SUBTYPE", "U20"), ("DELTACHI2", "f8")])
    rr["TARGETID"] = np.arange(nrows)[::-1] + 10**15
    rr["SPECTYPE"] = "STAR"
    fitsio.write(str(folder / src.name.replace("coadd-", "redrock-")), rr, extname="REDSHIFTS", clobber=True)
    return out


def floor(path: str) -> tuple:
    # Keep all three arrays, as any reader must: dropping them early lets the allocator hand the
    # same warm pages to the next read, which no real consumer of the data gets.
    with fitsio.FITS(path) as f:
        return f["B_FLUX"].read(), f["B_IVAR"].read(), f["B_MASK"].read()


def ours(path: str) -> int:
    return len(read_coadd(path, arms=["B"], redrock=None))


def ours_redrock(path: str) -> int:
    return len(read_coadd(path, arms=["B"], redrock="auto"))


def measure(path: str, repeat: int) -> dict:
    funcs = {"fitsio floor": floor, "read_coadd": ours, "read_coadd+redrock": ours_redrock}
    times = {k: [] for k in funcs}
    nspec = floor(path)[0].shape[0]
    for fn in funcs.values():  # warm the page cache and imports
        fn(path)
    for _ in range(repeat):
        for name, fn in funcs.items():
            t0 = time.perf_counter()
            fn(path)
            times[name].append(time.perf_counter() - t0)
    return {name: nspec / statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=500, help="rows of the synthetic coadd")
    ap.add_argument("--repeat", type=int, default=30, help="timed reads per reader and data set")
    ap.add_argument("--desi-dir", type=pathlib.Path, default=ROOT.parent / "shared" / "realdata" / "desi")
    args = ap.parse_args()
    src = args.desi_dir / EDR
    with tempfile.TemporaryDirectory(prefix="stxcat-bench-") as tmp:
        synthetic = make_synthetic(src, pathlib.Path(tmp), args.rows)
        sets = {f"synthetic {args.rows} rows": str(synthetic), "real EDR 5 rows": str(src)}
        print(f"{'data set':<22} {'reader':<20} {'spectra/s':>11} {'vs floor':>9}")
        for label, path in sets.items():
            rates = measure(path, args.repeat)
            base = rates["fitsio floor"]
            for name, r in rates.items():
                print(f"{label:<22} {name:<20} {r:>11.0f} {r / base:>8.0%}")


if __name__ == "__main__":
    main()
