"""The spectral encoder: tokens, masks, masked reconstruction, contrastive alignment, encoder LoRA."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from catalog_tool.errors import ConfigError
from catalog_tool.models.encoder import (
    EncoderConfig,
    SpectrumEncoder,
    apply_encoder_lora,
    chunk_mask,
    encode,
    merge_encoder_lora,
)
from catalog_tool.train.encoder import EncoderTrainConfig, pretrain_encoder
from catalog_tool.train.synthetic import toy_labels, toy_spectra

NPIX = 200
TINY = EncoderConfig(n_in=NPIX, width=32, layers=1, heads=2)


def test_default_grid_gives_145_tokens_and_windows_are_unfolded_slices():
    assert EncoderConfig().n_tokens == 145  # (1462 - 20) // 10 + 1
    assert EncoderConfig(n_in=1462, token=20, stride=20).n_tokens == 73
    enc = SpectrumEncoder(EncoderConfig(n_in=64, token=8, stride=4, width=16, layers=1, heads=2))
    z = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 64) ** 1.5  # asymmetric in both axes
    w = enc.tokens(z)
    assert w.shape == (2, 15, 8)
    assert torch.equal(w[1, 3], z[1, 12:20])
    with pytest.raises(ConfigError, match="multiple of heads"):
        EncoderConfig(width=30, heads=4)


def test_standardisation_removes_scale_and_the_std_token_keeps_it():
    torch.manual_seed(0)
    enc = SpectrumEncoder(TINY).eval()
    x = 1.0 + 0.1 * torch.randn(3, NPIX)
    z, mean, std = enc.standardise(x * 3.0 + 2.0)
    z0, _, std0 = enc.standardise(x)
    assert torch.allclose(z, z0, atol=1e-5)
    assert torch.allclose(std, 3.0 * std0, rtol=1e-5)
    # Same shape, different contrast: the log10(std) token makes the embeddings differ.
    e1, e2 = enc(x), enc(1.0 + 2.0 * (x - 1.0))
    assert (e1 - e2).abs().max() > 1e-3


def test_chunk_mask_masks_contiguous_runs_near_the_ratio():
    m = chunk_mask(400, 145, ratio=0.3, min_run=3, max_run=7, generator=torch.Generator().manual_seed(1))
    assert m.shape == (400, 145) and m.dtype == torch.bool
    assert 0.2 < m.float().mean() < 0.32
    # Every masked run is at least min_run long (runs may merge, never shrink).
    starts = m[:, 1:] & ~m[:, :-1]
    assert starts.any()
    edges = np.diff(np.c_[np.zeros(400), m.numpy().astype(int), np.zeros(400)], axis=1)
    lengths = np.flatnonzero(edges.ravel() == -1) - np.flatnonzero(edges.ravel() == 1)
    assert lengths.min() >= 3
    assert not torch.equal(m[0], m[1])


def test_reconstruction_loss_counts_only_masked_tokens_and_good_pixels():
    torch.manual_seed(0)
    enc = SpectrumEncoder(TINY).eval()
    x = 1.0 + 0.1 * torch.randn(4, NPIX)
    ivar = torch.full_like(x, 400.0)
    mask = torch.zeros(4, TINY.n_tokens, dtype=torch.bool)
    mask[:, 5:9] = True  # pixels 50..109
    base = enc.reconstruction_loss(x, token_mask=mask, ivar=ivar)
    # Changing a pixel far from the masked tokens' windows changes the input but not which errors count;
    # zero ivar on a masked pixel removes it from the loss.
    iv2 = ivar.clone()
    iv2[:, 60] = 0.0
    assert not torch.isclose(enc.reconstruction_loss(x, token_mask=mask, ivar=iv2), base)
    iv3 = ivar.clone()
    iv3[:, 150:] = 0.0  # outside the masked windows: no effect on the weights
    assert torch.isclose(enc.reconstruction_loss(x, token_mask=mask, ivar=iv3), base)


@pytest.fixture(scope="module")
def toy_set():
    rng = np.random.default_rng(11)
    labels = toy_labels(360, rng=rng)
    flux_a, ivar_a = toy_spectra(labels=labels, npix=NPIX, snr=rng.uniform(30, 80, 360), rng=rng)
    flux_b, ivar_b = toy_spectra(labels=labels, npix=NPIX, snr=rng.uniform(30, 80, 360), rng=rng, broadening=1.3)
    return flux_a, ivar_a, flux_b, ivar_b, labels


def test_masked_pretraining_reduces_the_reconstruction_loss(toy_set):
    torch.set_num_threads(1)
    flux, ivar = toy_set[0], toy_set[1]
    cfg = EncoderTrainConfig(epochs=6, batch_size=32, lr=2e-3, warmup=10, device="cpu", seed=2)
    out = pretrain_encoder(flux=flux, ivar=ivar, config=cfg, encoder_config=TINY)
    s = out.summary
    assert s["n_train"] + s["n_val"] == 360 and not s["contrastive"]
    assert s["best_val_loss"] < 0.6 * s["initial_val"]["recon"], s
    assert s["history"][-1]["train_recon"] < s["history"][0]["train_recon"]
    assert not any(p.requires_grad for p in out.encoder.parameters())


def test_contrastive_training_brings_two_renderings_of_one_star_together(toy_set):
    torch.set_num_threads(1)
    fa, ia, fb, ib, _ = toy_set
    train, test = slice(0, 300), slice(300, None)
    cfg = EncoderTrainConfig(epochs=8, batch_size=32, lr=2e-3, warmup=10, device="cpu", seed=4)
    out = pretrain_encoder(flux=fa[train], ivar=ia[train], flux_b=fb[train], ivar_b=ib[train], config=cfg,
                           encoder_config=TINY)
    s = out.summary
    assert s["contrastive"] and s["history"][-1]["val_contrastive"] < s["initial_val"]["contrastive"]

    def cos_dist(enc):
        ea = torch.nn.functional.normalize(torch.from_numpy(encode(enc, flux=fa[test])), dim=1)
        eb = torch.nn.functional.normalize(torch.from_numpy(encode(enc, flux=fb[test])), dim=1)
        return (1 - ea @ eb.T).numpy()

    def ratio(d):  # mean distance between the two renderings of a star / between different stars
        return np.diag(d).mean() / d[~np.eye(len(d), dtype=bool)].mean()

    torch.manual_seed(cfg.seed)  # the same initial weights pretrain_encoder starts from
    before = ratio(cos_dist(SpectrumEncoder(TINY).eval()))
    d = cos_dist(out.encoder)
    # Held-out stars: renderings of one star end up much closer than different stars, and much
    # closer than the untrained encoder puts them (about 0.32 -> 0.06 here).
    assert ratio(d) < 0.4 * before and ratio(d) < 0.15
    assert np.mean(np.diag(d) < np.median(d, axis=1)) > 0.95


def test_pretrain_encoder_refuses_bad_inputs_and_counts_nonfinite_rows(toy_set):
    flux = toy_set[0][:40].copy()
    with pytest.raises(ConfigError, match="does not match"):
        pretrain_encoder(flux=flux, encoder_config=EncoderConfig(n_in=NPIX + 1, width=32, layers=1, heads=2))
    with pytest.raises(ConfigError, match="flux_b has shape"):
        pretrain_encoder(flux=flux, flux_b=flux[:, :-1])
    flux[3, 7] = np.nan
    out = pretrain_encoder(flux=flux, encoder_config=TINY,
                           config=EncoderTrainConfig(epochs=1, batch_size=8, device="cpu"))
    assert out.summary["n_nonfinite_left_out"] == 1 and out.summary["n_train"] + out.summary["n_val"] == 39


def test_encoder_lora_starts_at_the_base_trains_only_factors_and_merges_exactly():
    torch.manual_seed(3)
    base = SpectrumEncoder(TINY).eval()
    x = 1.0 + 0.1 * torch.randn(6, NPIX)
    ref = base(x)
    lora = apply_encoder_lora(copy.deepcopy(base), rank=4, alpha=8.0).eval()
    assert torch.equal(lora(x), ref)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    assert len(trainable) == 4 * TINY.layers  # q/k/v pair + output pair per layer
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    moved = lora(x)
    assert (moved - ref).abs().max() > 1e-3
    merged = merge_encoder_lora(lora)
    assert not any(".lora_" in k for k in merged.state_dict())
    assert torch.allclose(merged(x), moved, atol=1e-5)


