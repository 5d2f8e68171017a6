"""Spectra per second reading LAMOST LRS files: our reader against a bare fitsio read (the floor).

Usage: python benchmarks/bench_lamost.py [LAMOST_DIR] [--repeat N]

LAMOST_DIR defaults to ../shared/realdata/lamost beside the project. Each file is read ``repeat``
times per layout. Two references: the floor opens the file with fitsio and reads the data (the
image, or the COADD row) and nothing else; "fitsio + header" also parses the primary header with
fitsio's ``read_header`` (about 2 ms for a LAMOST header, which the reader avoids by parsing only
the cards it looks up). Prints a table.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import fitsio

from catalog_tool.io.lamost import read_lamost, read_lamost_files

ROOT = pathlib.Path(__file__).resolve().parent.parent


def bare(path: pathlib.Path, header: bool = False) -> None:
    with fitsio.FITS(str(path)) as f:
        if header:
            f[0].read_header()
        if f[0].has_data():
            f[0].read()
        else:
            f["COADD"].read(columns=["FLUX", "IVAR", "WAVELENGTH", "ANDMASK"])


def rate(fn, paths, repeat) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        for p in paths:
            fn(p)
    return repeat * len(paths) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=ROOT.parent / "shared" / "realdata" / "lamost")
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    files = sorted(pathlib.Path(args.folder).iterdir())
    groups = {"dr1": [f for f in files if f.name.startswith("dr1-")],
              "dr7 (plain)": [f for f in files if f.name.startswith("dr7-") and f.suffix == ".fits"],
              "dr7 (gzip)": [f for f in files if f.name.endswith(".gz")],
              "dr10": [f for f in files if f.name.startswith("dr10-")]}
    print(f"{'layout':<12} {'files':>5} {'fitsio floor /s':>16} {'fitsio + header /s':>19} "
          f"{'read_lamost /s':>15} {'of floor':>9}")
    for name, paths in groups.items():
        floor = rate(bare, paths, args.repeat)
        with_header = rate(lambda p: bare(p, header=True), paths, args.repeat)
        ours = rate(read_lamost, paths, args.repeat)
        print(f"{name:<12} {len(paths):>5} {floor:>16.0f} {with_header:>19.0f} {ours:>15.0f} {ours / floor:>9.2f}")
    t0 = time.perf_counter()
    for _ in range(max(1, args.repeat // 10)):
        batch, _ = read_lamost_files(files)
    n = len(batch) * max(1, args.repeat // 10)
    print(f"read_lamost_files, all {len(files)} files with concat: {n / (time.perf_counter() - t0):.0f} spectra/s")


if __name__ == "__main__":
    main()
