"""Flux-noise propagation: first-order (input gradients) against Monte Carlo, accuracy and cost.

Trains a paper-size multi-label MLP ensemble (1462 px, 1024-512-64, FEH/ALPHAFE/TEFF/LOGG) for a
few epochs on the seeded toy set, then for held-out spectra at S/N 10, 30 and 100 compares the
noise term of ``infer.predict`` from

* ``linear``  first-order propagation through the input gradients,
* ``mc K``    Monte Carlo with K draws,

against a Monte Carlo reference with many draws (default 1000). Also compares the noise term from
the first member only (the default) with that of the whole ensemble mean, and prints the
calibration of the total error (spread of (pred - true) / error) per S/N. Prints Markdown tables.

    python benchmarks/bench_uncertainty.py [--n-test 200] [--ref-draws 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from catalog_tool.models.bundle import make_provenance
from catalog_tool.models.infer import predict
from catalog_tool.train.evaluate import calibration_table
from catalog_tool.train.loop import TrainConfig
from catalog_tool.train.pretrain import pretrain
from catalog_tool.train.synthetic import TOY_LABELS, toy_labels, toy_spectra


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--ref-draws", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="where to write the trained bundle (default: a temp dir)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(11)
    lab = toy_labels(args.n_train, rng=rng)
    flux, _ = toy_spectra(labels=lab, rng=rng, snr=rng.uniform(10, 150, args.n_train))
    (te, t_train) = timed(lambda: pretrain(flux=flux, labels=lab, names=list(TOY_LABELS), heads="multi-label",
                                           ensemble=args.members,
                                           config=TrainConfig(epochs=args.epochs, lr=1e-3, batch_size=64, seed=1)))
    import tempfile
    work = args.workdir or tempfile.mkdtemp()
    grid = {"loglam0": 3.602, "dloglam": 1e-4, "npix": 1462}
    b = te.save(f"{work}/bench-uncertainty", grid=grid, preprocess={}, overwrite=True,
                provenance=make_provenance(command="bench_uncertainty", seed=1))
    print(f"trained {args.members} x multi-label 1462-1024-512-64-4 on {args.n_train} toy spectra, "
          f"{args.epochs} epochs: {t_train:.0f} s\n")

    test = toy_labels(args.n_test, rng=rng)
    true = np.stack([test[n] for n in TOY_LABELS], axis=1)
    print("| S/N | method | median ratio to reference | 16-84% of ratio | s per 1000 spectra |")
    print("|---|---|---|---|---|")
    calib = {"pred": [], "err": [], "true": [], "snr": [], "err1": [], "errall": []}
    ratio_members = []
    for snr in (10.0, 30.0, 100.0):
        f, iv = toy_spectra(labels=test, rng=rng, snr=snr)
        ref, _ = timed(lambda: predict(b, flux=f, ivar=iv, noise="mc", noise_members=1, mc_draws=args.ref_draws, seed=99))
        rows = [("linear", dict(noise="linear", noise_members=1))] + [
            (f"mc {k}", dict(noise="mc", noise_members=1, mc_draws=k, seed=k)) for k in (8, 16, 32, 64)]
        for name, kw in rows:
            p, dt = timed(lambda: predict(b, flux=f, ivar=iv, **kw))
            r = (p.noise_std / ref.noise_std).ravel()
            lo, med, hi = np.percentile(r, [16, 50, 84])
            print(f"| {snr:g} | {name} | {med:.3f} | {lo:.3f}-{hi:.3f} | {1000 * dt / len(f):.2f} |", flush=True)
        none, dt = timed(lambda: predict(b, flux=f, ivar=iv, noise="none"))
        print(f"| {snr:g} | none (ensemble only) | - | - | {1000 * dt / len(f):.2f} |")
        one = predict(b, flux=f, ivar=iv, noise="linear", noise_members=1)
        allm = predict(b, flux=f, ivar=iv, noise="linear", noise_members=None)
        ratio_members.append((snr, np.median(one.noise_std / allm.noise_std, axis=0)))
        calib["pred"].append(one.values), calib["true"].append(true), calib["snr"].append(np.full(len(f), snr))
        calib["err1"].append(one.errors), calib["errall"].append(allm.errors)

    print("\nNoise term from the first member / from the whole ensemble mean (median per label):\n")
    print("| S/N | " + " | ".join(TOY_LABELS) + " |")
    print("|---|" + "---|" * len(TOY_LABELS))
    for snr, r in ratio_members:
        print(f"| {snr:g} | " + " | ".join(f"{x:.2f}" for x in r) + " |")

    pred, tr, snr = (np.concatenate(calib[k]) for k in ("pred", "true", "snr"))
    for key, title in (("err1", "noise from member 0 (default)"), ("errall", "noise from all members")):
        rows = calibration_table(pred=pred, true=tr, err=np.concatenate(calib[key]), snr=snr,
                                 label_names=list(TOY_LABELS), snr_edges=(0, 20, 50, np.inf))
        print(f"\nCalibration, total error = sqrt(ensemble_var + noise_var), {title}: robust spread of z\n")
        print("| label | S/N 10 | S/N 30 | S/N 100 |")
        print("|---|---|---|---|")
        for j, name in enumerate(TOY_LABELS):
            print(f"| {name} | " + " | ".join(f"{r['z_scatter']:.2f}" for r in rows[3 * j:3 * j + 3]) + " |")


if __name__ == "__main__":
    main()
