"""``stxcat calibrate`` on a few thousand stars: runtime, and planted vs recovered coefficients.

Usage::

    python benchmarks/bench_calibrate.py [--stars 3000] [--bundle default] [--trend 1]
        [--data-dir DIR] [--threads 1] [--seed 0]

A simulated DESI release of about ``--stars`` stars is made once in ``--data-dir`` (kept). Its truth
table is written as an APOGEE DR17 allStar-style table (``tests/label_table_factory.py``: real names
and dtypes, -9999 sentinels, STAR_BAD flags, duplicates) twice:

* ``native``: the reference labels are the simulation's truth (+ APOGEE-size noise, 0.01 dex, 10 K);
  calibrating against it measures the bundle's own bias on these spectra;
* ``planted``: the reference labels are on a scale that differs from the truth by a planted
  relation, truth = ref + c0 + c1 (ref - x0) for FEH and a zero point for TEFF, so the fit against it
  should find the native relation composed with the planted one (``_expected``).

Each is calibrated on the even rows (``--where "ID % 2 == 0"`` is not in the grammar, so the two
halves are two tables) and checked on the odd ones (stars the fit never saw): bias and robust sigma
of calibrated - reference there. The runtime of ``run_calibrate`` (read, preprocess, predict, fit,
write) is reported with the load average. One seeded run; the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

PLANT = {"FEH": {"c0": 0.10, "c1": 0.05, "x0": -0.5}, "TEFF": {"c0": 60.0, "c1": 0.0, "x0": 5500.0}}


def _release(data_dir: pathlib.Path, stars: int, seed: int):
    from catalog_tool.sim.desi import simulate_desi

    per_pixel = 500
    pixels = max(1, int(np.ceil(stars / (0.8 * per_pixel))))  # about 80% of the fibres are stars
    out = data_dir / f"desi-{pixels}x{per_pixel}-s{seed}"
    if not (out / "truth-desi.fits").exists():
        simulate_desi(out, pixels=pixels, per_pixel=per_pixel, seed=seed, resolution=False, checksum=False,
                      overwrite=True)
    return out


def _tables(rel: pathlib.Path, work: pathlib.Path, seed: int) -> dict:
    import fitsio

    from label_table_factory import apogee_table, stars_of, write_table

    stars = stars_of(fitsio.read(rel / "truth-desi.fits"))
    out = {}
    for k, kind in enumerate(("native", "planted")):
        rng = np.random.default_rng([seed, k])  # independent noise: the comparison is a statistical one
        ref = {}
        for name, col in (("FEH", "FEH"), ("TEFF", "TEFF")):
            truth = stars[col].astype(float)
            p = PLANT[name]
            r = truth if kind == "native" else p["x0"] + (truth - p["c0"] - p["x0"]) / (1 + p["c1"])
            ref[name] = r + rng.normal(0, 0.01 if name == "FEH" else 10.0, r.size)
        rows = apogee_table(stars, rng=rng, feh=ref["FEH"], teff=ref["TEFF"], n_duplicates=len(stars) // 50,
                            n_sentinel=10, n_bad=len(stars) // 40)
        order = np.argsort(rows["APOGEE_ID"])  # duplicates sit next to their star: both in one half
        halves = {"fit": rows[order[0::2]], "check": rows[order[1::2]]}
        out[kind] = {h: write_table(work / f"allStar-{kind}-{h}.fits", t) for h, t in halves.items()}
    return out


def _check(bundle_path, rel, table, names) -> dict:
    """Bias and robust sigma of the bundle's (calibrated) values on a table it was not fitted on."""
    from catalog_tool.models.bundle import load_bundle
    from catalog_tool.models.infer import predict
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.train.data import load_labelled
    from catalog_tool.train.evaluate import robust_scatter
    from catalog_tool.train.labels import LabelOptions

    b = load_bundle(bundle_path)
    ls, _ = load_labelled([os.fspath(rel)], labels_path=table, names=names, grid=ModelGrid.from_dict(b.grid),
                          settings=PreprocessSettings.from_dict(b.preprocess),
                          options=LabelOptions(preset="apogee", where="ASPCAPFLAG & 2**23 == 0"))
    pred = predict(b, flux=ls.flux, ivar=ls.ivar, device="cpu")
    out = {}
    for n in names:
        j = b.label_names.index(n)
        r = pred.values[:, j] - ls.labels[n]
        z = r / np.sqrt(pred.errors[:, j].astype(float) ** 2 + np.nan_to_num(ls.errors[n]) ** 2)
        ok = np.isfinite(r)
        out[n] = {"n": int(ok.sum()), "bias": float(np.mean(r[ok])), "sigma": robust_scatter(r[ok]),
                  "z": robust_scatter(z[ok])}
    return out


def _expected(native: dict, plant: dict, pivot: float) -> list[float]:
    """Zero point and slope about ``pivot`` that the planted fit should find.

    predicted - ref = N(truth) + Q(ref) with N the native relation (a line about its own pivot, in
    the truth) and Q(ref) = c0 + c1 (ref - x0) the planted one, truth = ref + Q(ref); both linear, so
    the sum is a line in ref: evaluate it and its slope at ``pivot``.
    """
    n0 = native["coef"][0]
    n1 = native["coef"][1] if len(native["coef"]) > 1 else 0.0
    q = plant["c0"] + plant["c1"] * (pivot - plant["x0"])
    return [n0 + n1 * (pivot + q - native["pivot"]) + q, n1 * (1 + plant["c1"]) + plant["c1"]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stars", type=int, default=3000)
    ap.add_argument("--bundle", default="default")
    ap.add_argument("--trend", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    from catalog_tool.train.calibrate import run_calibrate
    from catalog_tool.train.labels import LabelOptions

    data_dir = pathlib.Path(args.data_dir or tempfile.mkdtemp(prefix="bench-calibrate-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rel = _release(data_dir, args.stars, args.seed)
    print(f"release {rel.name} ready in {time.perf_counter() - t0:.1f} s")
    work = pathlib.Path(tempfile.mkdtemp(prefix="cal-", dir=data_dir))
    tables = _tables(rel, work, args.seed)
    names = ["FEH", "TEFF"]
    opts = LabelOptions(preset="apogee", where="ASPCAPFLAG & 2**23 == 0")
    results = {}
    for kind in ("native", "planted"):
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        r = run_calibrate(args.bundle, [os.fspath(rel)], labels_path=tables[kind]["fit"], out=work / f"cal-{kind}",
                          label_options=opts, names=names, trend=args.trend, device="cpu", overwrite=True)
        seconds = time.perf_counter() - t0
        results[kind] = {"outcome": r, "seconds": seconds, "load": (load0 + os.getloadavg()[0]) / 2,
                         "raw": _check(args.bundle, rel, tables[kind]["check"], names),
                         "cal": _check(r.bundle.path, rel, tables[kind]["check"], names)}
        print(f"{kind}: {r.label_summary}; {seconds:.1f} s (load average {results[kind]['load']:.2f})")

    print("\n| run | spectra | seconds | load avg |\n|---|---|---|---|")
    for kind, res in results.items():
        print(f"| calibrate ({kind}) | {res['outcome'].n_spectra} | {res['seconds']:.1f} | {res['load']:.2f} |")
    print("\n| label | coefficient | native fit | planted fit | expected | planted fit - expected | (1 sigma) |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        en = results["native"]["outcome"].calibration["labels"][n]
        ep = results["planted"]["outcome"].calibration["labels"][n]
        expected = _expected(en, PLANT[n], ep["pivot"])
        for k, label in enumerate(["zero point", "slope"][:len(ep["coef"])]):
            err = np.hypot(ep["coef_err"][k], en["coef_err"][k])
            print(f"| {n} | {label} | {en['coef'][k]:+.4f} | {ep['coef'][k]:+.4f} | {expected[k]:+.4f} | "
                  f"{ep['coef'][k] - expected[k]:+.4f} | {err:.4f} |")
    print("\n| table | label | stars (check half) | bias raw | bias calibrated | sigma raw | sigma calibrated "
          "| pull sigma raw | pull sigma calibrated |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, res in results.items():
        for n in names:
            a, b = res["raw"][n], res["cal"][n]
            print(f"| {kind} | {n} | {a['n']} | {a['bias']:+.4g} | {b['bias']:+.4g} | {a['sigma']:.4g} | "
                  f"{b['sigma']:.4g} | {a['z']:.3g} | {b['z']:.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
