#!/usr/bin/env python
"""The paper's study in our simulated world: zero-shot, adapter, LoRA and full fine-tuning.

Simulates a LAMOST release (pre-training) and two DESI releases of other stars (a labelled
fine-tuning set and a held-out test set), pre-trains the paper's per-label MLPs on LAMOST,
fine-tunes them on DESI with each method, and prints bias / robust scatter / MAE / N per label on
the test set, overall and for [Fe/H] < -1 and >= -1 (Markdown).

    python examples/finetune_study.py [--n-lamost 3000] [--n-desi 500] [--n-test 600]
        [--labels FEH,ALPHAFE] [--epochs 20] [--ft-epochs 30] [--threads 2]

Every step is seeded; the defaults run in a few minutes on 2 CPU cores. Results are in
docs/models.md ("The paper's study in our world").
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-lamost", type=int, default=3000)
    ap.add_argument("--n-desi", type=int, default=500)
    ap.add_argument("--n-test", type=int, default=600)
    ap.add_argument("--labels", default="FEH,ALPHAFE")
    ap.add_argument("--hidden", default="1024,512,64")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--ft-epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ft-lr", type=float, default=3e-4)
    ap.add_argument("--full-lr", type=float, default=None, help="learning rate of full fine-tuning (default: --ft-lr)")
    ap.add_argument("--freeze-bn", action="store_true", help="full fine-tuning keeps the BatchNorm statistics")
    ap.add_argument("--methods", default="zero-shot,adapter,lora,full")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--ensemble", type=int, default=1)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="folder for the simulated releases (default: a temp dir)")
    args = ap.parse_args(argv)

    import torch

    from catalog_tool.models.bundle import make_provenance
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.train.evaluate import format_markdown, metrics_table
    from catalog_tool.train.loop import TrainConfig
    from catalog_tool.train.pretrain import pretrain
    from catalog_tool.train.study import finetune_methods, simulate_study_sets

    torch.set_num_threads(args.threads)
    names = args.labels.split(",")
    hidden = tuple(int(h) for h in args.hidden.split(","))
    grid, settings = ModelGrid(), PreprocessSettings()
    with tempfile.TemporaryDirectory(prefix="stxcat-study-") as tmp:
        work = args.work or tmp
        sets = simulate_study_sets(work, n_lamost=args.n_lamost, n_desi=args.n_desi, n_test=args.n_test, names=names,
                                   seed=args.seed, grid=grid, settings=settings, log=log).sets
        log("sizes: " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()))

        lamset, ft, test = sets["lamost"], sets["desi_ft"], sets["desi_test"]
        log(f"pre-training per-label MLPs {hidden} on LAMOST")
        t0 = time.perf_counter()
        ens = pretrain(flux=lamset.flux, labels=lamset.labels, names=names, hidden=hidden, heads="per-label",
                       ensemble=args.ensemble, config=TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                                                  lr=args.lr, seed=args.seed, patience=5))
        log(f"  {time.perf_counter() - t0:.0f} s")
        prov = make_provenance(command="examples/finetune_study.py", seed=args.seed)
        base = ens.save(os.path.join(work, "pretrained"), grid=grid, preprocess=settings, provenance=prov,
                        overwrite=True)
        true = np.stack([test.labels[n] for n in names], axis=1)

        def config_for(method):
            lr = args.full_lr if method == "full" and args.full_lr else args.ft_lr
            return TrainConfig(epochs=args.ft_epochs, batch_size=32, lr=lr, seed=args.seed, patience=8,
                               freeze_bn=args.freeze_bn)

        rows = []
        for r in finetune_methods(base, ft=ft, test=test, methods=args.methods.split(","), config_for=config_for,
                                  out_dir=work, provenance=prov, grid=grid, settings=settings, log=log):
            for row in metrics_table(pred=r.pred, true=true, label_names=names, feh_ref=test.labels["FEH"]):
                rows.append({"method": r.method, **row})
        rows.sort(key=lambda r: (names.index(r["label"]), r["subset"], r["method"]))
        print(f"\nTest set: {len(test)} simulated DESI stars; fine-tuned on {len(ft)}; pre-trained on {len(lamset)} "
              f"simulated LAMOST spectra.\n")
        print(format_markdown(rows, columns=["label", "subset", "method", "n", "bias", "scatter", "mae"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
