#!/usr/bin/env python
"""Train the bundled ``default`` model: the committed, one-command recipe.

    python scripts/train_default_model.py --out catalog_tool/data/models/default \\
        [--wheel sdss_mangadap-4.5.0-py3-none-any.whl]

What it does (every step seeded; see :mod:`catalog_tool.train.sim2real` and docs/model-card.md):

1. reads the MILES library from the ``sdss-mangadap`` wheel (``pip download`` when ``--wheel`` is
   not given) and sets aside the held-out stars (MILES id divisible by 5): they are asserted out
   of every training, validation and calibration set and only ever evaluated;
2. renders the other MILES stars and the STELIB stars matched to them (``--copies-lamost``,
   ``--copies-desi`` and ``--copies-ft-lamost`` times each) and emulated stars at Milky-Way-like
   labels through the LAMOST and DESI instrument models, in the surveys' real file formats, with domain randomisation (LSF, flux calibration, sky residuals,
   dust, masked runs) and S/N 5-200, and preprocesses them as ``stxcat annotate`` does;
3. pre-trains an ensemble of the paper's MLP (1462 -> 1024 -> 512 -> 64, one multi-label head for
   FEH, ALPHAFE, TEFF, LOGG) on the LAMOST set, fine-tunes it on the DESI set with each method
   (zero-shot, adapter, lora, full) and picks the one with the lowest validation loss on real
   stars the networks never saw (copies of a star stay on one side of every split);
4. fits the per-label systematic error floor on those validation stars, writes the bundle (float16
   weights, checked to change no prediction of 256 spectra by more than 0.005 dex) and a JSON file of the metrics --
   the held-out MILES stars in DESI and LAMOST format at S/N 30 per B pixel, split at [Fe/H] = -1
   and logg = 3.5 with z-scores, and the simulated test stars -- that docs/model-card.md is
   generated from (``python scripts/gen_model_card.py``).

Two runs give byte-identical weights (CPU, ``--threads 1``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


#: Largest prediction change (dex) float16 storage of the shipped weights may cause.
FLOAT16_TOLERANCE = 5e-3


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The recipe's options (``benchmarks/bench_peers.py`` reads their defaults too)."""
    from catalog_tool.train.sim2real import Sim2RealConfig

    d = Sim2RealConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="bundle folder to write")
    ap.add_argument("--wheel", help="sdss-mangadap 4.5.0 wheel (default: pip download into the work folder)")
    ap.add_argument("--work", default=None, help="folder for the simulated sets (default: a temp dir)")
    ap.add_argument("--copies-lamost", type=int, default=d.copies_lamost)
    ap.add_argument("--copies-desi", type=int, default=d.copies_desi)
    ap.add_argument("--copies-ft-lamost", type=int, default=d.copies_ft_lamost)
    ap.add_argument("--no-stelib", action="store_true", help="train on MILES stars only (no STELIB renderings)")
    ap.add_argument("--n-emu-lamost", type=int, default=d.n_emu_lamost)
    ap.add_argument("--n-emu-desi", type=int, default=d.n_emu_desi)
    ap.add_argument("--ensemble", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--ft-epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ft-lr", type=float, default=3e-4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--methods", default="zero-shot,adapter,lora,full")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--metrics-out", default="docs/model-card-metrics.json")
    return ap


def recipe_config(args):
    """The :class:`~catalog_tool.train.sim2real.Sim2RealConfig` of a run with these options."""
    from catalog_tool.train.sim2real import Sim2RealConfig

    return Sim2RealConfig(copies_lamost=args.copies_lamost, copies_desi=args.copies_desi,
                          copies_ft_lamost=args.copies_ft_lamost, n_emu_lamost=args.n_emu_lamost,
                          n_emu_desi=args.n_emu_desi, seed=args.seed)


def recipe_libraries(wheel, *, stelib: bool = True):
    """The libraries the recipe renders: ``(model, extra)`` as :func:`~catalog_tool.train.sim2real.build_sets`
    takes them (MILES, and the other libraries whose training stars are added: STELIB)."""
    from catalog_tool.sim.library import LibraryModel, read_miles, read_stelib

    model = LibraryModel(read_miles(wheel))
    return model, ((LibraryModel(read_stelib(wheel), fill=model.fill),) if stelib else ())


#: Options naming this machine's files: left out of the command recorded in the bundle.
_PATH_OPTIONS = ("out", "wheel", "work", "metrics_out")


def recorded_command(args) -> str:
    """The command line as the bundle records it: the options that differ from the defaults, without
    the paths (``--out``, ``--wheel``, ``--work``, ``--metrics-out``), which name one machine's files."""
    parser = build_parser()
    parts = ["python", "scripts/train_default_model.py", "--out", "OUT"]
    for action in parser._actions:
        key = action.dest
        if key in _PATH_OPTIONS or key == "help" or not action.option_strings:
            continue
        value = getattr(args, key)
        if value != action.default:
            parts += [action.option_strings[0]] if value is True else [action.option_strings[0], str(value)]
    return " ".join(parts)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    import torch

    from catalog_tool.models.bundle import load_bundle, make_provenance
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.sim.library import HELDOUT_RULE, fetch_wheel, is_heldout
    from catalog_tool.train.sim2real import evaluate_heldout, run_recipe

    torch.set_num_threads(args.threads)
    grid, settings = ModelGrid(), PreprocessSettings()
    config = recipe_config(args)
    with tempfile.TemporaryDirectory(prefix="stxcat-train-") as tmp:
        work = args.work or tmp
        os.makedirs(work, exist_ok=True)
        wheel = args.wheel or fetch_wheel(work)
        model, extra = recipe_libraries(wheel, stelib=not args.no_stelib)
        library = model.library
        prov = make_provenance(
            command=recorded_command(args), seed=args.seed,
            training_data={"library": library.source, "extra": [m.library.source for m in extra],
                           "heldout": HELDOUT_RULE, "recipe": "catalog_tool.train.sim2real",
                           "config": config.to_dict()})
        t0 = time.perf_counter()
        r = run_recipe(work, model=model, config=config, grid=grid, settings=settings, extra=extra,
                       ensemble=args.ensemble, epochs=args.epochs, ft_epochs=args.ft_epochs, lr=args.lr,
                       ft_lr=args.ft_lr, batch_size=args.batch_size, methods=args.methods.split(","),
                       provenance=prov, log=log)
        sets = r["sets"]
        training = {"chosen_method": r["chosen"], "val_loss": {m: x["val_loss"] for m, x in r["results"].items()},
                    "heldout_rule": HELDOUT_RULE, "sizes": r["sizes"]}
        manifest_extra = {"training": training, **r["extra"]}
        # float16 may move a prediction by up to 0.005 dex (measured and recorded in the manifest):
        # 1/30 of the smallest systematic floor, far below any scatter in the model card
        r["final"].save(args.out, grid=grid, preprocess=settings, provenance=prov, name="default", float16=True,
                        float16_tolerance=FLOAT16_TOLERANCE, check_flux=sets["heldout_desi"].data.flux[:256],
                        overwrite=True, extra=manifest_extra)
        shipped = load_bundle(args.out)
        final_eval = evaluate_heldout(shipped, sets)
        results = {m: {k: v for k, v in x.items() if k != "sim_test_calibration"} for m, x in r["results"].items()}
        metrics = {"chosen": r["chosen"], "results": results, "final": final_eval, "error_floor": r["floor"],
                   "floor_fitted_on": r["floor_fitted_on"], "weights_sha256": shipped.sha256,
                   "sizes": r["sizes"], "heldout_rule": HELDOUT_RULE, "config": config.to_dict(),
                   "library": library.source, "extra_libraries": [m.library.source for m in extra],
                   "training_stars": {m.library.name: int((~is_heldout(m.library.ids)).sum())
                                      for m in (model, *extra)},
                   "pretrain_seconds": r["pretrain_seconds"],
                   "seconds": round(time.perf_counter() - t0), "args": {k: v for k, v in vars(args).items()
                                                                       if k not in _PATH_OPTIONS}}
        with open(args.metrics_out, "w") as fh:
            json.dump(metrics, fh, indent=1, default=float)
        feh = next(x for x in final_eval["heldout_desi"] if x["label"] == "FEH" and x["subset"] == "all")
        log(f"wrote {args.out} ({r['chosen']}; held-out DESI FEH scatter {feh['scatter']:.3f}, "
            f"z {feh['z_scatter']:.2f}) and {args.metrics_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
