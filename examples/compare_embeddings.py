#!/usr/bin/env python
"""The paper's comparison in our simulated world: spectrum MLPs vs MLPs on transformer embeddings.

Simulates a LAMOST release (pre-training) and DESI releases of other stars (a labelled fine-tuning
set and a held-out test set), then

* ``comparison``: pre-trains the paper's per-label MLPs on the LAMOST spectra, and a spectral
  encoder (masked-chunk reconstruction) with per-label MLP heads on its frozen embeddings; fine-tunes
  both kinds on DESI with each method (zero-shot, adapter, lora, full); prints bias / robust scatter
  / MAE / N per label on the test set, overall and split at [Fe/H] = -1, the training times and the
  CPU inference cost per spectrum (without and with first-order noise propagation);
* ``contrastive``: renders the LAMOST stars through DESI too, pre-trains a second encoder with the
  LAMOST-DESI contrastive term (and, with ``--control``, a third on both views without it), trains
  heads on LAMOST for each, and prints the embedding MLPs' zero-shot (and adapter) metrics on DESI
  (``--encoders`` picks which of the three encoders to train).

    python examples/compare_embeddings.py [--parts comparison,contrastive] [--n-lamost 3000]
        [--n-desi 1500] [--n-test 1000] [--labels FEH,ALPHAFE] [--preset default] [--threads 2]
        [--encoders masked,contrastive,both-views] [--json-out results.json] [--quick]

Every step is seeded. With the defaults ``--parts comparison`` takes about 18 minutes on 2 busy CPU
cores and ``--parts contrastive`` about 12; ``--quick`` runs both parts on a few dozen stars with
tiny networks in well under a minute (a smoke test: its numbers mean nothing). Results and their
reading are in docs/encoder.md ("The comparison in our simulated world").

Expected output with the defaults and ``--parts comparison,contrastive`` (abridged; ``--quick``
prints the same tables on tiny sets):

    Test set: 994 simulated DESI stars (75 with [Fe/H] < -1); fine-tuned on 1489; pre-trained on 3000 ...
    | label | subset | kind | method | n | bias | scatter | mae |
    | FEH | [Fe/H] < -1 | embedding | zero-shot | 75 | 0.464 | 0.36 | 0.491 |
    ...
    | kind | pre-train s | zero-shot s | adapter s | lora s | full s | noise none ms/spectrum | noise linear ms/spectrum |
    ...
    | label | subset | method | encoder | n | bias | scatter | mae |
    ...
    | encoder | seconds | n | val recon start | val recon best |
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

QUICK = dict(n_lamost=60, n_desi=40, n_test=40, hidden="16,8", epochs=2, ft_epochs=1, enc_epochs=1,
             enc_ft_epochs=1, width=16, layers=1, heads=2, batch_size=16)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default=None,
                    help="comma list of: comparison, contrastive (default: comparison; with --quick both)")
    ap.add_argument("--n-lamost", type=int, default=3000)
    ap.add_argument("--n-desi", type=int, default=1500, help="DESI fine-tuning stars")
    ap.add_argument("--n-test", type=int, default=1000, help="held-out DESI test stars")
    ap.add_argument("--labels", default="FEH,ALPHAFE")
    ap.add_argument("--hidden", default="1024,512,64", help="MLP hidden widths (both kinds, per label)")
    ap.add_argument("--epochs", type=int, default=15, help="MLP pre-training epochs (max; patience 5)")
    ap.add_argument("--ft-epochs", type=int, default=20, help="fine-tuning epochs of MLPs and adapters (patience 6)")
    ap.add_argument("--enc-epochs", type=int, default=3, help="encoder pre-training epochs")
    ap.add_argument("--enc-ft-epochs", type=int, default=4, help="fine-tuning epochs of embedding lora/full")
    ap.add_argument("--preset", default="default", help="encoder size: default, medium or specclip")
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--heads", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ft-lr", type=float, default=3e-4)
    ap.add_argument("--full-lr", type=float, default=3e-5, help="learning rate of full fine-tuning (both kinds)")
    ap.add_argument("--methods", default="zero-shot,adapter,lora,full")
    ap.add_argument("--kinds", default="spectrum,embedding")
    ap.add_argument("--encoders", default=None,
                    help="contrastive part: encoders to compare, of masked (LAMOST only), contrastive (LAMOST and "
                         "DESI views of the same stars, with the contrastive term), both-views (both views, "
                         "reconstruction only: the control); default masked,contrastive (with --quick all three)")
    ap.add_argument("--control", action="store_true", help="same as adding both-views to --encoders")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="folder for releases and bundles (default: a temp dir)")
    ap.add_argument("--json-out", default=None, help="also write every metric and timing as JSON")
    ap.add_argument("--quick", action="store_true", help="tiny sets and networks, both parts (a smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    args.parts = args.parts or ("comparison,contrastive" if args.quick else "comparison")
    args.encoders = args.encoders or ("masked,contrastive,both-views" if args.quick else "masked,contrastive")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    import torch

    from catalog_tool.models.bundle import make_provenance
    from catalog_tool.models.encoder import ENCODER_PRESETS, EncoderConfig
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.train.encoder import EncoderTrainConfig, pretrain_embedding, pretrain_encoder
    from catalog_tool.train.evaluate import format_markdown, metrics_table
    from catalog_tool.train.loop import TrainConfig
    from catalog_tool.train.pretrain import pretrain
    from catalog_tool.train.study import finetune_methods, inference_seconds, paired_rows, simulate_study_sets

    torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    names, methods, kinds = args.labels.split(","), args.methods.split(","), args.kinds.split(",")
    hidden = tuple(int(h) for h in args.hidden.split(","))
    grid, settings = ModelGrid(), PreprocessSettings()
    size = {**ENCODER_PRESETS[args.preset],
            **{k: getattr(args, k) for k in ("width", "layers", "heads") if getattr(args, k) is not None}}
    ecfg = EncoderConfig(n_in=grid.npix, **size)
    prov = make_provenance(command="examples/compare_embeddings.py", seed=args.seed)
    results = {"args": vars(args), "rows": [], "contrastive_rows": [], "costs": [], "encoders": {}}

    def mlp_config(epochs, lr, batch, patience):
        return TrainConfig(epochs=epochs, batch_size=batch, lr=lr, seed=args.seed, patience=patience, device="cpu")

    def config_for(kind):
        def cfg(method):
            lr = args.full_lr if method == "full" else args.ft_lr
            slow = kind == "embedding" and method in ("lora", "full")  # these run the encoder every step
            return mlp_config(args.enc_ft_epochs if slow else args.ft_epochs, lr, 32, 6)
        return cfg

    def encoder(key, flux, ivar, flux_b=None, ivar_b=None, weight=1.0):
        t0 = time.perf_counter()
        cfg = EncoderTrainConfig(epochs=args.enc_epochs, batch_size=args.batch_size, seed=args.seed, device="cpu",
                                 contrastive_weight=weight)
        trained = pretrain_encoder(flux=flux, ivar=ivar, flux_b=flux_b, ivar_b=ivar_b, config=cfg, encoder_config=ecfg)
        enc = trained.save(os.path.join(work, f"encoder-{key}"), grid=grid, preprocess=settings, provenance=prov,
                           overwrite=True)
        s = trained.summary
        results["encoders"][key] = {"seconds": s["seconds"], "n": s["n_spectra"], "initial_val": s["initial_val"],
                                    "best_val": s["history"][s["best_epoch"]] if s["best_epoch"] >= 0 else None}
        log(f"  encoder {key}: {s['n_spectra']} spectra, val recon {s['initial_val']['recon']:.3f} -> "
            f"{s['best_val_loss']:.3f} (total), {time.perf_counter() - t0:.0f} s")
        return enc

    def heads_on(enc, key):
        t0 = time.perf_counter()
        trained = pretrain_embedding(flux=lam.flux, labels=lam.labels, names=names, encoder=enc, hidden=hidden,
                                     heads="per-label", ensemble=1,
                                     config=mlp_config(args.epochs, args.lr, args.batch_size, 5))
        b = trained.save(os.path.join(work, f"emb-{key}"), provenance=prov, overwrite=True)
        return b, time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="stxcat-compare-") as tmp:
        work = args.work or tmp
        os.makedirs(work, exist_ok=True)
        study = simulate_study_sets(work, n_lamost=args.n_lamost, n_desi=args.n_desi, n_test=args.n_test, names=names,
                                    seed=args.seed, grid=grid, settings=settings, paired="contrastive" in parts, log=log)
        lam, ft, test = study.sets["lamost"], study.sets["desi_ft"], study.sets["desi_test"]
        true = np.stack([test.labels[n] for n in names], axis=1)
        encoders = args.encoders.split(",") + (["both-views"] if args.control else [])
        if "comparison" in parts or ("contrastive" in parts and "masked" in encoders):
            log(f"encoder {size} ({ecfg.n_tokens} tokens), masked reconstruction on {len(lam)} LAMOST spectra")
            enc_masked = encoder("masked", lam.flux, lam.ivar)

        if "comparison" in parts:
            bases, pre_s = {}, {}
            if "spectrum" in kinds:
                log(f"pre-training per-label spectrum MLPs {hidden} on LAMOST")
                t0 = time.perf_counter()
                ens = pretrain(flux=lam.flux, labels=lam.labels, names=names, hidden=hidden, heads="per-label",
                               ensemble=1, config=mlp_config(args.epochs, args.lr, args.batch_size, 5))
                bases["spectrum"] = ens.save(os.path.join(work, "spectrum"), grid=grid, preprocess=settings,
                                             provenance=prov, overwrite=True)
                pre_s["spectrum"] = time.perf_counter() - t0
            if "embedding" in kinds:
                log(f"training per-label MLP heads {hidden} on frozen embeddings")
                bases["embedding"], pre_s["embedding"] = heads_on(enc_masked, "masked")
                pre_s["embedding"] += results["encoders"]["masked"]["seconds"]
            for kind, base in bases.items():
                log(f"fine-tuning the {kind} MLPs on {len(ft)} DESI stars")
                out = finetune_methods(base, ft=ft, test=test, methods=methods, config_for=config_for(kind),
                                       out_dir=os.path.join(work, kind + "-ft"), provenance=prov,
                                       grid=grid, settings=settings, log=log)
                for r in out:
                    for row in metrics_table(pred=r.pred, true=true, label_names=names, feh_ref=test.labels["FEH"]):
                        results["rows"].append({"kind": kind, "method": r.method, "ft_seconds": r.seconds, **row})
                n_lin = min(len(test), 256)  # first-order noise through the encoder is slow: a subset suffices
                results["costs"].append({
                    "kind": kind, "pretrain_s": pre_s[kind],
                    "ms_none": 1e3 * inference_seconds(base, flux=test.flux, ivar=test.ivar, noise="none"),
                    "ms_linear": 1e3 * inference_seconds(base, flux=test.flux[:n_lin], ivar=test.ivar[:n_lin],
                                                         noise="linear"),
                    **{f"ft_{r.method}_s": r.seconds for r in out}})

        if "contrastive" in parts:
            ia, ib = paired_rows(study)
            pair = study.sets["desi_pair"]
            log(f"contrastive encoder on {len(ia)} LAMOST-DESI pairs of the same stars")
            encs = {}
            for key in dict.fromkeys(encoders):
                if key == "masked":
                    encs[key] = enc_masked
                elif key in ("contrastive", "both-views"):
                    encs[key] = encoder(key, lam.flux[ia], lam.ivar[ia], pair.flux[ib], pair.ivar[ib],
                                        weight=1.0 if key == "contrastive" else 0.0)
                else:
                    raise SystemExit(f"unknown encoder {key!r} (masked, contrastive, both-views)")
            for key, enc in encs.items():
                base, _ = heads_on(enc, key)
                out = finetune_methods(base, ft=ft, test=test, methods=[m for m in ("zero-shot", "adapter")],
                                       config_for=config_for("embedding"), out_dir=os.path.join(work, f"c-{key}"),
                                       provenance=prov, grid=grid, settings=settings, log=log)
                for r in out:
                    for row in metrics_table(pred=r.pred, true=true, label_names=names, feh_ref=test.labels["FEH"]):
                        results["contrastive_rows"].append({"encoder": key, "method": r.method, **row})

        print(f"\nTest set: {len(test)} simulated DESI stars ({int((test.labels['FEH'] < -1).sum())} with "
              f"[Fe/H] < -1); fine-tuned on {len(ft)}; pre-trained on {len(lam)} simulated LAMOST spectra; "
              f"encoder {size}.\n")
        if results["rows"]:
            rows = sorted(results["rows"], key=lambda r: (names.index(r["label"]), r["subset"], r["kind"],
                                                          methods.index(r["method"])))
            print(format_markdown(rows, columns=["label", "subset", "kind", "method", "n", "bias", "scatter", "mae"]))
            print(format_markdown([{"kind": c["kind"], "pre-train s": c["pretrain_s"],
                                    **{f"{m} s": c.get(f"ft_{m}_s", np.nan) for m in methods},
                                    "noise none ms/spectrum": c["ms_none"], "noise linear ms/spectrum": c["ms_linear"]}
                                   for c in results["costs"]]))
        if results["contrastive_rows"]:
            rows = sorted(results["contrastive_rows"], key=lambda r: (names.index(r["label"]), r["subset"],
                                                                      r["method"], r["encoder"]))
            print(format_markdown(rows, columns=["label", "subset", "method", "encoder", "n", "bias", "scatter",
                                                 "mae"]))
            print(format_markdown([{"encoder": k, **{kk: v for kk, v in e.items() if kk in ("n", "seconds")},
                                    "val recon start": e["initial_val"]["recon"],
                                    "val recon best": (e["best_val"] or {}).get("val_recon", np.nan)}
                                   for k, e in results["encoders"].items()]))
        if args.json_out:
            with open(args.json_out, "w") as fh:
                json.dump(results, fh, indent=1, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
