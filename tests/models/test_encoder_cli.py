"""stxcat pretrain-encoder (contrastive, on simulated LAMOST + DESI renderings of the same stars) and
stxcat pretrain --encoder, end to end on tiny releases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from catalog_tool.cli import main
from catalog_tool.models.bundle import load_bundle
from catalog_tool.sim.desi import simulate_desi
from catalog_tool.sim.lamost import simulate_lamost
from catalog_tool.sim.population import sample_labels

TINY = ["--width", "32", "--layers", "1", "--heads", "2", "--batch-size", "8", "--threads", "1"]


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    root = tmp_path_factory.mktemp("sims")
    labels = sample_labels(24, rng=np.random.default_rng(3))
    lam = simulate_lamost(root / "lam", labels=labels, seed=1, snr_range=(30.0, 80.0))
    desi = simulate_desi(root / "desi", labels=labels, pixels=1, seed=2, resolution=False, checksum=False,
                         snr_range=(30.0, 80.0))
    return root, lam.truth, desi.truth


def test_pretrain_encoder_contrastive_then_embedding_mlp(releases):
    torch.set_num_threads(1)
    root, truth_lam, truth_desi = releases
    run = CliRunner().invoke
    spectra = str(root / "lam" / "spectra")
    r = run(main, ["pretrain-encoder", spectra, "--out", str(root / "enc"), "--epochs", "2", *TINY,
                   "--contrastive-with", str(root / "desi"), "--pair-truth", truth_lam, truth_desi])
    assert r.exit_code == 0, r.output
    assert "24 spectra (pairs)" in r.output
    m = json.loads((root / "enc" / "manifest.json").read_text())
    assert m["kind"] == "encoder" and m["architecture"]["n_tokens"] == 145
    assert m["architecture"]["config"]["width"] == 32 and m["training"]["contrastive"]
    assert m["provenance"]["training_data"]["read"]["pairs"] == 24
    assert len((root / "enc" / "training_log.jsonl").read_text().splitlines()) == 2
    # Without --pair-truth the simulated stars sit at unrelated positions: refused, one line, exit 1.
    r = run(main, ["pretrain-encoder", spectra, "--out", str(root / "enc2"), "--epochs", "1", *TINY,
                   "--contrastive-with", str(root / "desi")])
    assert r.exit_code == 1 and "--pair-truth" in r.output and "Traceback" not in r.output

    r = run(main, ["pretrain", spectra, "--labels", truth_lam, "--label", "FEH", "--encoder", str(root / "enc"),
                   "--out", str(root / "emb"), "--epochs", "2", "--hidden", "16,8,4", "--ensemble", "2",
                   "--batch-size", "8", "--threads", "1"])
    assert r.exit_code == 0, r.output
    b = load_bundle(root / "emb")
    assert b.manifest["architecture"]["kind"] == "embedding-mlp"
    assert b.manifest["architecture"]["encoder"]["sha256"] == m["weights"]["sha256"]
    assert (root / "emb" / "encoder" / "weights.safetensors").read_bytes() == (root / "enc" / "weights.safetensors").read_bytes()
