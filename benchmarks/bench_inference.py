"""Throughput of ensemble inference with uncertainties on CPU (spectra per second).

Compares the paper's per-label networks (ensemble M x L networks) with the multi-label head
(M networks with L outputs), and the noise-propagation options of ``infer.predict``. Weights are
random (speed does not depend on them). Prints a Markdown table.

    python benchmarks/bench_inference.py [--n 2048] [--threads 1 2] [--members 5] [--labels 4]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from catalog_tool.models.bundle import Bundle, architecture_dict
from catalog_tool.models.infer import predict
from catalog_tool.models.mlp import MLPConfig, build_member


def make_bundle(*, heads: str, members: int, labels: int, hidden=(1024, 512, 64), npix: int = 1462) -> Bundle:
    config = MLPConfig(n_in=npix, n_out=labels if heads == "multi-label" else 1, hidden=hidden)
    torch.manual_seed(0)
    nets = [build_member(config=config, n_labels=labels, heads=heads).eval() for _ in range(members)]
    manifest = {"name": f"bench-{heads}", "architecture": architecture_dict(config=config, heads=heads),
                "labels": [{"name": f"L{j}", "unit": "dex", "mean": 0.0, "std": 1.0, "domain": [-1, 1]}
                           for j in range(labels)], "ensemble_size": members}
    return Bundle(manifest=manifest, members=nets)


def rate(bundle, flux, ivar, **kw) -> float:
    predict(bundle, flux=flux[:64], ivar=ivar[:64], **kw)  # warm-up
    t0 = time.perf_counter()
    predict(bundle, flux=flux, ivar=ivar, **kw)
    return len(flux) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--labels", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=1024)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    flux = (1 + 0.05 * rng.standard_normal((args.n, 1462))).astype(np.float32)
    ivar = np.full_like(flux, 400.0)
    setups = [("per-label", (1024, 512, 64)), ("multi-label", (1024, 512, 64)), ("multi-label", (256, 128, 64))]
    noises = [("none", {}), ("linear, 1 member", {"noise": "linear", "noise_members": 1}),
              ("linear, all members", {"noise": "linear", "noise_members": None}),
              ("mc 16 draws, 1 member", {"noise": "mc", "noise_members": 1, "mc_draws": 16})]
    print("| heads | hidden | networks | noise | threads | spectra/s |")
    print("|---|---|---|---|---|---|")
    for heads, hidden in setups:
        b = make_bundle(heads=heads, members=args.members, labels=args.labels, hidden=hidden)
        nnet = args.members * (args.labels if heads == "per-label" else 1)
        for label, kw in noises:
            for t in args.threads:
                torch.set_num_threads(t)
                kw2 = {"noise": "none", **kw}
                r = rate(b, flux, ivar, batch_size=args.batch_size, **kw2)
                print(f"| {heads} | {'-'.join(map(str, hidden))} | {nnet} | {label} | {t} | {r:.0f} |", flush=True)


if __name__ == "__main__":
    main()
