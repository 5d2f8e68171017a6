"""Annotate a simulated DESI release, compare with its truth, and write the QA report.

Steps: ``simulate_desi`` writes a small DESI healpix release (coadd + redrock files in the real
format) with a truth table; ``pipeline.run.annotate`` turns it into a VAC (what ``stxcat annotate``
runs); the VAC is read back with ``read_vac``; ``make_report`` draws the figures and compares with
the truth.

Usage::

    python examples/annotate_desi.py [--model default] [--out stxcat-example-desi]
                                     [--pixels 2] [--per-pixel 30] [--seed 1]

Expected output (with the bundled ``default`` model; the number of stars and the metrics depend on
the seed and the model, a tiny test model gives large residuals)::

    simulated 60 fibres (39 stars) in 2 HEALPix pixels: stxcat-example-desi/sim
    wrote stxcat-example-desi/vac.fits: 46 rows, 39 estimated, 7 FLAG_BAD
        TARGETID        SURVEY PROGRAM   FEH  FEH_ERR   TEFF  LOGG  FLAGS
    39627...  main   bright   -0.41   0.09   5612  4.21      0
    ... (5 rows)
    FEH vs truth: bias +0.02 dex, scatter 0.11 dex over 39 stars
    report: stxcat-example-desi/report/report.html

The sky and unassigned fibres of the simulation are not targets and get no VAC row; galaxies and
QSOs get a row flagged NOT_STAR (FLAGS bit 0, FLAG_BAD).
"""

from __future__ import annotations

import argparse
import os
import shutil

import numpy as np


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="bundled model name or bundle folder")
    ap.add_argument("--out", default="stxcat-example-desi", help="folder for the simulation, VAC and report")
    ap.add_argument("--pixels", type=int, default=2)
    ap.add_argument("--per-pixel", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    from catalog_tool.config import build_config
    from catalog_tool.pipeline.run import annotate
    from catalog_tool.report import make_report
    from catalog_tool.sim.desi import simulate_desi
    from catalog_tool.vac.write import read_vac

    if os.path.isdir(args.out):
        shutil.rmtree(args.out)  # the example's own folder: start clean every run
    sim = simulate_desi(os.path.join(args.out, "sim"), pixels=args.pixels, per_pixel=args.per_pixel,
                        seed=args.seed, resolution=False)
    print(f"simulated {sim.nspec} fibres ({sim.nstars} stars) in {args.pixels} HEALPix pixels: {sim.out}")

    vac_path = os.path.join(args.out, "vac.fits")
    cfg = build_config(inputs=(sim.out,), out=vac_path, model=args.model, progress=False,
                       command="examples/annotate_desi.py")
    s = annotate(cfg)
    print(f"wrote {s.out}: {s.rows} rows, {s.estimated} estimated, {s.flagged_bad} FLAG_BAD")

    vac = read_vac(vac_path, columns=["TARGETID", "SURVEY", "PROGRAM", "FEH", "FEH_ERR", "TEFF", "LOGG", "FLAGS"])
    print(f"{'TARGETID':>18} {'SURVEY':>6} {'PROGRAM':>7} {'FEH':>6} {'FEH_ERR':>7} {'TEFF':>6} {'LOGG':>5} {'FLAGS':>5}")
    for r in vac[:5]:
        print(f"{r['TARGETID']:>18} {r['SURVEY'].strip():>6} {r['PROGRAM'].strip():>7} {r['FEH']:6.2f} "
              f"{r['FEH_ERR']:7.2f} {r['TEFF']:6.0f} {r['LOGG']:5.2f} {r['FLAGS']:5d}")

    rep = make_report(vac_path, os.path.join(args.out, "report"), truth=sim.truth)
    feh = next(m for m in rep.summary["truth"]["metrics"] if m["label"] == "FEH" and m["subset"] == "all")
    print(f"FEH vs truth: bias {feh['bias']:+.2f} dex, scatter {feh['scatter']:.2f} dex over {feh['n']} stars")
    print(f"report: {rep.html}")
    assert np.all(np.isin(["FEH", "TEFF"], list(vac.dtype.names)))


if __name__ == "__main__":
    main()
