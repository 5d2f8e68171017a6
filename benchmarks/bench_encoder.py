"""Encoder costs on this machine: pre-training time per epoch and encoder+head inference throughput.

Prints a table. For each encoder size: seconds per masked-reconstruction training step (batch 64),
extrapolated to one epoch of 50,000 spectra (and with --contrastive, two views per star); and
``infer.predict`` throughput (spectra/s) of a 5-member embedding bundle (frozen encoder shared by
the members, heads 1024-512-64 per label, 2 labels) with noise propagation off and first-order,
next to the paper's spectrum MLP bundle of the same shape. Random weights: costs do not depend on
training. Run: ``python benchmarks/bench_encoder.py [--sizes default,medium] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from catalog_tool.models.bundle import Bundle
from catalog_tool.models.encoder import ENCODER_PRESETS, EmbeddingMember, EncoderConfig, SpectrumEncoder, chunk_mask
from catalog_tool.models.infer import predict
from catalog_tool.models.mlp import MLPConfig, build_member
from catalog_tool.train.synthetic import toy_labels, toy_spectra

NPIX = 1462


def fake_bundle(members, *, n_in: int, kind: str) -> Bundle:
    labels = [{"name": n, "unit": "dex", "mean": 0.0, "std": 1.0, "domain": [-3.0, 1.0]} for n in ("FEH", "ALPHAFE")]
    arch = {"kind": kind, "n_in": n_in, "mlp": {"n_in": n_in}, "finetune": {"method": "zero-shot"}}
    for m in members:
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    return Bundle(manifest={"name": kind, "architecture": arch, "labels": labels, "ensemble_size": len(members),
                            "weights": {"sha256": ""}}, members=members)


def time_call(fn, *, repeat: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def train_step_seconds(cfg: EncoderConfig, flux: np.ndarray, ivar: np.ndarray, *, views: int, steps: int) -> float:
    enc = SpectrumEncoder(cfg).train()
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-4)
    x, iv = torch.from_numpy(flux[:64]), torch.from_numpy(ivar[:64])
    gen = torch.Generator().manual_seed(0)

    def step():
        loss = 0
        for _ in range(views):
            mask = chunk_mask(len(x), cfg.n_tokens, generator=gen)
            loss = loss + enc.reconstruction_loss(x, token_mask=mask, ivar=iv)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return time_call(step, repeat=steps)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="default,medium", help="Comma-separated presets (default, medium, specclip).")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=512, help="Spectra per inference measurement.")
    ap.add_argument("--steps", type=int, default=4, help="Training steps timed per size.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    flux, ivar = toy_spectra(labels=toy_labels(args.n, rng=rng), npix=NPIX, snr=50.0, rng=rng)
    head = MLPConfig(n_in=NPIX, hidden=(1024, 512, 64))
    rows = []
    torch.manual_seed(0)
    mlp = fake_bundle([build_member(config=head, n_labels=2, heads="per-label") for _ in range(5)], n_in=NPIX,
                      kind="spectrum-mlp")
    for noise in ("none", "linear"):
        dt = time_call(lambda: predict(mlp, flux=flux, ivar=ivar, noise=noise, batch_size=256), repeat=2)
        rows.append(("spectrum MLP (paper)", "-", "-", "-", noise, args.n / dt))
    for size in args.sizes.split(","):
        cfg = EncoderConfig(n_in=NPIX, **ENCODER_PRESETS[size])
        enc = SpectrumEncoder(cfg).eval()
        for p in enc.parameters():
            p.requires_grad_(False)
        hcfg = MLPConfig(n_in=cfg.width, hidden=(1024, 512, 64))
        emb = fake_bundle([EmbeddingMember(enc, build_member(config=hcfg, n_labels=2, heads="per-label"))
                           for _ in range(5)], n_in=NPIX, kind="embedding-mlp")
        s1 = train_step_seconds(cfg, flux, ivar, views=1, steps=args.steps)
        s2 = train_step_seconds(cfg, flux, ivar, views=2, steps=args.steps)
        epoch1, epoch2 = s1 * 50_000 / 64, s2 * 50_000 / 64
        for noise in ("none", "linear"):
            dt = time_call(lambda: predict(emb, flux=flux, ivar=ivar, noise=noise, batch_size=256), repeat=2)
            rows.append((f"encoder {size} {cfg.width}/{cfg.layers}/{cfg.heads} + MLP", f"{epoch1 / 60:.1f}",
                         f"{epoch2 / 60:.1f}", f"{sum(p.numel() for p in enc.parameters()) / 1e6:.2f}", noise,
                         args.n / dt))
    print(f"torch threads: {args.threads}; {args.n} spectra of {NPIX} px; 5 members, 2 labels per-label heads; "
          "machine shared with other jobs (figures are indicative)")
    hdr = ("model", "train min/epoch 50k", "contrastive min/epoch 50k", "encoder Mparam", "noise", "predict spectra/s")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        print("| " + " | ".join(list(map(str, r[:5])) + [f"{r[5]:.0f}"]) + " |")


if __name__ == "__main__":
    main()
