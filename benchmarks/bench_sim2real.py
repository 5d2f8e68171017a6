"""What each ingredient of the sim-to-real recipe buys, on held-out real MILES stars.

Usage::

    python benchmarks/bench_sim2real.py --wheel sdss_mangadap-4.5.0-py3-none-any.whl \
        [--work DIR] [--configs full,no-real,...] [--ensemble 1] [--seed 2026]

Each configuration runs :func:`catalog_tool.train.sim2real.run_recipe` (pre-training on LAMOST,
fine-tuning on DESI with LoRA, error floor on unseen real validation stars) with one ingredient
changed, and evaluates the result on the held-out MILES stars (id divisible by 5, 3800 < Teff <
7500 K, S/N 30 per B pixel) rendered by the base simulators (``desi``, ``lamost``) and with the full
domain randomisation (``desi~``: the same stars with perturbed LSF, calibration, sky, dust and
masks, a stand-in for what real data do that the base simulator does not). Printed per
configuration and format: robust scatter of FEH, TEFF, LOGG and the z-score spread of FEH.

Configurations:

* ``v0.1``: emulated stars only, no randomisation (the previous recipe, refitted emulator)
* ``emulator+rand``: emulated stars only, with randomisation
* ``real-only``: MILES training stars only, with randomisation
* ``no-rand``: real + emulated stars, no randomisation
* ``full``: real (MILES and STELIB) + emulated stars with randomisation (the shipped recipe)
* ``-stelib``: ``full`` without the STELIB renderings
* ``-lsf``, ``-calibration``, ``-sky``, ``-extinction``, ``-masks``: ``full`` without one ingredient

Sets are cached in ``--work`` (reused across configurations and runs). The wheel is the PyPI
``sdss-mangadap==4.5.0`` (``pip download --no-deps sdss-mangadap==4.5.0``). Networks use one
ensemble member by default (the shipped model has five), so the numbers are for comparing
ingredients; one seeded run each, on a machine that may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = ("v0.1", "emulator+rand", "real-only", "no-rand", "full", "-stelib", "-lsf", "-calibration", "-sky",
           "-extinction", "-masks")


def make_config(name: str, seed: int):
    from catalog_tool.sim.randomise import DomainRandomisation
    from catalog_tool.train.sim2real import Sim2RealConfig

    full = DomainRandomisation()
    kw = {"seed": seed, "eval_randomised": True}
    if name == "v0.1":
        return Sim2RealConfig(real=False, randomise=None, **kw)
    if name == "emulator+rand":
        return Sim2RealConfig(real=False, randomise=full, **kw)
    if name == "real-only":
        return Sim2RealConfig(emulator=False, randomise=full, **kw)
    if name == "no-rand":
        return Sim2RealConfig(randomise=None, **kw)
    if name == "full":
        return Sim2RealConfig(randomise=full, **kw)
    if name == "-stelib":
        return Sim2RealConfig(randomise=full, **kw)
    if name.startswith("-"):
        return Sim2RealConfig(randomise=full.without(name[1:]), **kw)
    raise SystemExit(f"unknown configuration {name!r}; known: {', '.join(CONFIGS)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", help="sdss-mangadap wheel (default: pip download into --work)")
    ap.add_argument("--work", help="cache folder (default: a temporary folder)")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--ensemble", type=int, default=1)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    import torch

    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.sim.library import LibraryModel, fetch_wheel, read_miles, read_stelib
    from catalog_tool.train.sim2real import run_recipe

    torch.set_num_threads(args.threads)
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="stxcat-sim2real-")
    work = args.work or tmp.name
    wheel = args.wheel or fetch_wheel(work)
    model = LibraryModel(read_miles(wheel))
    stelib = (LibraryModel(read_stelib(wheel), fill=model.fill),)
    rows, results = [], {}
    for name in args.configs.split(","):
        cfg = make_config(name, args.seed)
        t0 = time.perf_counter()
        extra = () if name in ("-stelib", "v0.1", "emulator+rand") else stelib
        r = run_recipe(work, model=model, config=cfg, grid=ModelGrid(), settings=PreprocessSettings(), extra=extra,
                       ensemble=args.ensemble, methods=("lora",),
                       log=lambda m: print(f"  [{time.strftime('%H:%M:%S')}] {m}", flush=True))
        secs = time.perf_counter() - t0
        results[name] = {"config": cfg.to_dict(), "floor": r["floor"], "eval": r["final_eval"], "seconds": secs}
        for key, fmt in (("heldout_desi", "desi"), ("heldout_desi_rand", "desi~"), ("heldout_lamost", "lamost"),
                         ("heldout_lamost_rand", "lamost~")):
            rep = {(x["label"], x["subset"]): x for x in r["final_eval"][key]}
            rows.append((name, fmt, rep[("FEH", "all")]["scatter"], rep[("FEH", "[Fe/H] < -1")]["scatter"],
                         rep[("FEH", "all")]["bias"], rep[("TEFF", "all")]["scatter"], rep[("LOGG", "all")]["scatter"],
                         rep[("FEH", "all")]["z_scatter"], rep[("TEFF", "all")]["z_scatter"],
                         rep[("LOGG", "all")]["z_scatter"]))
        print(f"{name}: {secs:.0f} s (load {os.getloadavg()[0]:.2f}); " + "; ".join(
            f"{r[1]} FEH {r[2]:.3f} TEFF {r[5]:.0f} LOGG {r[6]:.3f} z {r[7]:.2f}" for r in rows[-4:]), flush=True)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(results, fh, indent=1, default=float)
    print()
    print("| config | format | σ FEH | σ FEH [Fe/H]<−1 | bias FEH | σ TEFF (K) | σ LOGG | z FEH | z TEFF | z LOGG |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:+.3f} | {r[5]:.0f} | {r[6]:.3f} | "
              f"{r[7]:.2f} | {r[8]:.2f} | {r[9]:.2f} |")
    print(f"\nensemble {args.ensemble}, seed {args.seed}, load average {os.getloadavg()[0]:.2f}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
