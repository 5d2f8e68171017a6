"""Pre-training speed: epochs per minute for 100,000 spectra x 1 label, paper MLP, batch 32, on CPU.

Times whole epochs (training steps plus the validation pass) of ``train_network`` on a smaller
toy set and extrapolates linearly in the number of spectra (the cost per step does not depend on
the set size). Prints a Markdown table.

    python benchmarks/bench_train.py [--n 3000] [--threads 1 2] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from catalog_tool.models.mlp import MLPConfig, SpectrumMLP
from catalog_tool.train.loop import TrainConfig, split_indices, train_network
from catalog_tool.train.synthetic import toy_labels, toy_spectra


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--target", type=int, default=100_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    lab = toy_labels(args.n, rng=rng)
    flux, _ = toy_spectra(labels=lab, rng=rng)
    y = ((lab["FEH"] - lab["FEH"].mean()) / lab["FEH"].std()).astype(np.float32)[:, None]
    tr, va = split_indices(args.n, seed=0)
    print(f"| threads | batch | s per epoch ({args.n} spectra) | s per epoch ({args.target:,}) | epochs/min ({args.target:,}) "
          f"| 100 epochs ({args.target:,}) |")
    print("|---|---|---|---|---|---|")
    for t in args.threads:
        torch.set_num_threads(t)
        for bs in args.batch_size:
            torch.manual_seed(0)
            net = SpectrumMLP(MLPConfig(n_in=flux.shape[1]))
            cfg = TrainConfig(epochs=args.epochs, batch_size=bs, device="cpu")
            t0 = time.perf_counter()
            train_network(net, x=flux, y=y, train_idx=tr, val_idx=va, config=cfg, seed=0)
            per_epoch = (time.perf_counter() - t0) / args.epochs
            big = per_epoch * args.target / args.n
            print(f"| {t} | {bs} | {per_epoch:.2f} | {big:.0f} | {60 / big:.2f} | {100 * big / 3600:.1f} h |", flush=True)


if __name__ == "__main__":
    main()
