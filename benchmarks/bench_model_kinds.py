"""``stxcat annotate`` throughput with each model kind: spectrum MLP vs embedding MLP (encoder + heads).

Usage::

    python benchmarks/bench_model_kinds.py [--spectra 1000] [--spectrum-bundle PATH]
        [--embedding-bundle PATH] [--preset default] [--threads 1] [--batch-size 2048] [--data-dir DIR]
        [--kinds spectrum,embedding]

One simulated DESI release of ``--spectra`` fibres (made once in ``--data-dir``, as
``bench_annotate.py`` makes it) is annotated by the real command line in a child process with

* ``spectrum``: ``--spectrum-bundle``, default the bundled ``default`` model when it exists,
  otherwise an untrained multi-label paper-size MLP ensemble (1462-1024-512-64, 5 members);
* ``embedding``: ``--embedding-bundle``, default an untrained embedding bundle made in
  ``--data-dir``: a randomly initialised encoder of ``--preset`` size with 5 multi-label heads
  (width-1024-512-64), the same head shape and ensemble size as the spectrum bundle.

Speed does not depend on the weights. annotate propagates flux noise to first order (one backward
pass per label through member 0), which for an embedding bundle runs through the encoder's attention:
that term dominates its cost. The table gives wall and run seconds, stars per second and peak RSS.
On a machine shared with other work the figures vary; run it twice and keep the better.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile

import fitsio
import numpy as np

sys.path.insert(0, os.fspath(pathlib.Path(__file__).resolve().parent))
from bench_annotate import paper_bundle, release, run_cli  # noqa: E402  (sibling benchmark script)


def embedding_bundle(folder: pathlib.Path, preset: str) -> str:
    """An untrained embedding bundle (encoder of ``preset`` size, 5 multi-label heads), made once."""
    import torch

    from catalog_tool.models.bundle import LabelSpec, make_provenance
    from catalog_tool.models.encoder import ENCODER_PRESETS, EmbeddingMember, EncoderConfig, SpectrumEncoder
    from catalog_tool.models.encoder_bundle import save_embedding_bundle, save_encoder
    from catalog_tool.models.mlp import MLPConfig, build_member
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings

    path = folder / f"embedding-{preset}-untrained"
    if (path / "manifest.json").exists():
        return os.fspath(path)
    torch.manual_seed(0)
    grid, settings = ModelGrid(), PreprocessSettings()
    prov = make_provenance(command="benchmarks/bench_model_kinds.py (untrained)", seed=0)
    ecfg = EncoderConfig(n_in=grid.npix, **ENCODER_PRESETS[preset])
    enc = save_encoder(folder / f"encoder-{preset}-untrained", encoder=SpectrumEncoder(ecfg).eval(), grid=grid,
                       preprocess=settings, provenance=prov, overwrite=True)
    head = MLPConfig(n_in=ecfg.width, hidden=(1024, 512, 64))
    labels = [LabelSpec("FEH", "dex", -0.5, 0.5, (-4.0, 0.8)), LabelSpec("ALPHAFE", "dex", 0.1, 0.15, (-0.3, 0.6)),
              LabelSpec("TEFF", "K", 5500.0, 800.0, (3500.0, 8000.0)), LabelSpec("LOGG", "dex", 3.5, 1.0, (0.0, 5.5))]
    members = [EmbeddingMember(enc.encoder, build_member(config=head, n_labels=4, heads="multi-label")).eval()
               for _ in range(5)]
    save_embedding_bundle(path, members=members, encoder=enc, head_config=head, heads="multi-label", labels=labels,
                          provenance=prov, name=f"embedding-{preset}-untrained")
    return os.fspath(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spectra", type=int, default=1000, help="release size (fibres)")
    ap.add_argument("--spectrum-bundle", default=None)
    ap.add_argument("--embedding-bundle", default=None)
    ap.add_argument("--preset", default="default", help="encoder size of the untrained embedding bundle")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--per-pixel", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kinds", default="spectrum,embedding", help="which kinds to run")
    a = ap.parse_args()

    from catalog_tool.models.bundle import bundled_names, load_bundle

    data = pathlib.Path(a.data_dir or pathlib.Path(tempfile.gettempdir()) / "stxcat-bench-annotate")
    data.mkdir(parents=True, exist_ok=True)
    bundles = {"spectrum": lambda: a.spectrum_bundle or ("default" if "default" in bundled_names() else paper_bundle(data)),
               "embedding": lambda: a.embedding_bundle or embedding_bundle(data, a.preset)}
    rel = release(data, a.spectra, a.per_pixel)
    print(f"# release {rel.name}; device {a.device}; batch {a.batch_size}; torch threads {a.threads}; "
          f"{os.cpu_count()} CPUs; noise: first order (annotate's)")
    rows = []
    for kind, path in ((k, bundles[k]()) for k in a.kinds.split(",")):
        b = load_bundle(path)
        arch = b.manifest["architecture"]
        size = (f"encoder {arch['encoder']['config']['width']}/{arch['encoder']['config']['layers']}/"
                f"{arch['encoder']['config']['heads']}" if arch.get("kind") == "embedding-mlp" else "spectrum MLP")
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "vac.fits")
            wall, run_s, rss, _ = run_cli(["annotate", os.fspath(rel), "--out", out, "--model", path, "--no-progress",
                                           "--batch-size", str(a.batch_size), "--threads", str(a.threads),
                                           "--device", a.device])
            with fitsio.FITS(out) as f:
                nrows = f["STELLAR_PARAMS"].get_nrows()
                stars = int(np.isfinite(f["STELLAR_PARAMS"].read_column(b.label_names[0])).sum())
        rows.append((kind, b.name, size, len(b.members), nrows, stars, wall, run_s, stars / run_s,
                     1e3 * run_s / max(stars, 1), rss / 2**20))
    head = ("kind", "bundle", "network", "members", "VAC rows", "stars", "wall s", "run s", "stars/s",
            "ms/star", "peak RSS MB")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]:.1f} | {r[7]:.1f} | {r[8]:.0f} | "
              f"{r[9]:.1f} | {r[10]:.0f} |")


if __name__ == "__main__":
    main()
