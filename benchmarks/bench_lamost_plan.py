"""Planning cost per LAMOST file: header scan (``discover``) against the survey catalogue (``--catalog``).

Usage::

    python benchmarks/bench_lamost_plan.py [--files 10000] [--synthetic 1000000] [--data-dir DIR]
        [--partition-size 20000]

``--files``: a simulated LAMOST release of that many single-spectrum files (gzip-compressed,
mixed DR1/DR7/DR10 layouts, as the archive serves them; made once in ``--data-dir``) is planned
both ways, the way ``stxcat annotate`` plans (``pipeline.plan.make_plan``: discovery, HEALPix
partitions, the JSON the work dir keeps):

* ``headers``: every file opened and its header read (plus one image row for DR1/DR7);
* ``catalog``: the catalogue's rows read, the folders listed, files matched by name; none opened.

``--synthetic N``: N empty files with archive names plus an N-row catalogue (real column names
and types; planning from a catalogue never opens a file, so empty files plan exactly as real ones
do), planned from the catalogue only: the rate at a size closer to a whole release, and the peak
memory of planning (``tracemalloc``). Both figures are extrapolated to the 20 million files of a
LAMOST release.

Prints a table with the load average; the page cache is warm (the files were just listed or
written): on a cold parallel file system the header scan costs far more per file, the catalogue
plan a directory read per folder.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time
import tracemalloc

import numpy as np

RELEASE_FILES = 20_000_000


def simulated(data: pathlib.Path, n: int) -> pathlib.Path:
    from catalog_tool.sim.lamost import simulate_lamost

    out = data / f"lamost-{n}"
    if not (out / "truth-lamost.fits").exists():
        t0 = time.perf_counter()
        simulate_lamost(out, n=n, seed=7, gzip=True, overwrite=True)
        print(f"# simulated {n} LAMOST files in {time.perf_counter() - t0:.0f} s: {out}", flush=True)
    return out


def synthetic(data: pathlib.Path, n: int) -> tuple[pathlib.Path, pathlib.Path]:
    """``n`` empty files under 250-fibre plan folders and their catalogue, made once."""
    import fitsio

    from catalog_tool.sim.lamost import GENERAL_CATALOG_COLUMNS

    root = data / f"synthetic-{n}"
    cat = data / f"synthetic-{n}-catalogue.fits"
    if cat.exists():
        return root / "spectra", cat
    t0 = time.perf_counter()
    rng = np.random.default_rng(3)
    i = np.arange(n)
    plate = i // 250
    lmjd = 56000 + plate // 8
    planid = np.array([f"P{p:07d}" for p in range(plate.max() + 1)])[plate]
    spid, fiberid = 1 + (i % 250) // 16, 1 + i % 16 * 15 + (i % 250) // 16 % 15
    ra_c, dec_c = rng.uniform(0, 360, plate.max() + 1), rng.uniform(-10, 60, plate.max() + 1)
    data_rows = np.zeros(n, dtype=[(c, d) for c, d in GENERAL_CATALOG_COLUMNS])
    data_rows["obsid"] = 100_000_000 + i
    data_rows["lmjd"], data_rows["mjd"], data_rows["planid"] = lmjd, lmjd - 1, planid
    data_rows["spid"], data_rows["fiberid"] = spid, fiberid
    data_rows["ra"] = data_rows["ra_obs"] = (ra_c[plate] + rng.uniform(-1.5, 1.5, n)) % 360
    data_rows["dec"] = data_rows["dec_obs"] = np.clip(dec_c[plate] + rng.uniform(-1.5, 1.5, n), -90, 90)
    for folder in np.unique(planid):
        (root / "spectra" / folder).mkdir(parents=True, exist_ok=True)
    for r in range(n):
        name = f"spec-{lmjd[r]}-{planid[r]}_sp{spid[r]:02d}-{fiberid[r]:03d}.fits.gz"
        os.close(os.open(root / "spectra" / planid[r] / name, os.O_CREAT | os.O_WRONLY, 0o644))
    fitsio.write(os.fspath(cat), data_rows, clobber=True)
    print(f"# made {n} empty files and their catalogue in {time.perf_counter() - t0:.0f} s: {root}", flush=True)
    return root / "spectra", cat


def plan_once(inputs, *, catalog, partition_size: int, measure_memory: bool = False) -> dict:
    from catalog_tool.pipeline.plan import make_plan

    if measure_memory:
        tracemalloc.start()
    t0 = time.perf_counter()
    plan, idx = make_plan(inputs, partition_size=partition_size, model_name="m", model_sha256="0" * 64,
                          settings={}, catalog=catalog)
    t_plan = time.perf_counter() - t0
    t0 = time.perf_counter()
    text = json.dumps(plan, indent=1)  # what the work dir keeps (WorkDir.prepare)
    t_json = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] if measure_memory else 0
    if measure_memory:
        tracemalloc.stop()
    files = sum(len(p["files"]) for p in plan["partitions"])
    return {"files": files, "plan_s": t_plan, "json_s": t_json, "json_mb": len(text) / 2**20,
            "peak_mb": peak / 2**20, "partitions": len(plan["partitions"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10000, help="simulated LAMOST files (0: none)")
    ap.add_argument("--synthetic", type=int, default=1_000_000, help="empty files + catalogue (0: none)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--partition-size", type=int, default=20000)
    a = ap.parse_args()
    data = pathlib.Path(a.data_dir or pathlib.Path(tempfile.gettempdir()) / "stxcat-bench-lamost-plan")
    data.mkdir(parents=True, exist_ok=True)

    from catalog_tool.sim.lamost import CATALOG_NAME

    rows = []
    if a.files:
        rel = simulated(data, a.files)
        spectra, cat = rel / "spectra", rel / CATALOG_NAME
        for how, catalog in (("headers", None), ("catalog", os.fspath(cat))):
            load = os.getloadavg()[0]
            r = plan_once([spectra], catalog=catalog, partition_size=a.partition_size)
            rows.append((how, r, load))
    if a.synthetic:
        spectra, cat = synthetic(data, a.synthetic)
        load = os.getloadavg()[0]
        r = plan_once([spectra], catalog=os.fspath(cat), partition_size=a.partition_size)
        load2 = os.getloadavg()[0]
        mem = plan_once([spectra], catalog=os.fspath(cat), partition_size=a.partition_size, measure_memory=True)
        r["peak_mb"] = mem["peak_mb"]
        rows.append(("catalog (empty files)", r, max(load, load2)))

    head = ("plan from", "files", "plan s", "files/s", "plan.json s", "plan.json MB", "peak MB (traced)",
            "20M files: plan", "20M: plan.json", "20M: memory", "load")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for how, r, load in rows:
        scale = RELEASE_FILES / r["files"]
        mem = f"{r['peak_mb']:.0f}" if r["peak_mb"] else "-"
        mem20 = f"{r['peak_mb'] * scale / 1024:.0f} GB" if r["peak_mb"] else "-"
        print(f"| {how} | {r['files']} | {r['plan_s']:.2f} | {r['files'] / r['plan_s']:,.0f} | {r['json_s']:.2f} | "
              f"{r['json_mb']:.1f} | {mem} | {r['plan_s'] * scale / 60:.0f} min | {r['json_mb'] * scale / 1024:.1f} GB "
              f"| {mem20} | {load:.1f} |")
    print("# plan s: make_plan (discovery, partitions, fingerprint); files/s from it; plan.json: serialising the "
          "plan as the work dir keeps it. 20M: linear extrapolation to a 20-million-file release.")


if __name__ == "__main__":
    main()
