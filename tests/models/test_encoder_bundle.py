"""Embedding-MLP bundles: round trip, pinned encoder, predict, fine-tuning methods."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from catalog_tool.errors import BundleError, ConfigError
from catalog_tool.models.bundle import load_bundle, make_provenance
from catalog_tool.models.encoder import EmbeddingMember, EncoderConfig, SpectrumEncoder
from catalog_tool.models.encoder_bundle import load_encoder, save_encoder
from catalog_tool.models.infer import predict
from catalog_tool.train.encoder import EncoderTrainConfig, pretrain_embedding, pretrain_encoder
from catalog_tool.train.finetune import finetune
from catalog_tool.train.loop import TrainConfig
from catalog_tool.train.synthetic import toy_labels, toy_spectra

NPIX = 200
GRID = {"loglam0": 3.602, "dloglam": 1e-4, "npix": NPIX}
PREPROCESS = {"rest_frame": False, "lsf_match_R": None}
TINY = EncoderConfig(n_in=NPIX, width=32, layers=1, heads=2)
PROV = make_provenance(command="pytest", seed=0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(21)
    labels = toy_labels(700, rng=rng)
    flux, ivar = toy_spectra(labels=labels, npix=NPIX, snr=rng.uniform(20, 100, 700), rng=rng)
    # A second "instrument" (broader lines) for fine-tuning.
    flux_b, ivar_b = toy_spectra(labels=labels, npix=NPIX, snr=rng.uniform(20, 100, 700), rng=rng, broadening=1.4)
    return {"flux": flux, "ivar": ivar, "flux_b": flux_b, "ivar_b": ivar_b, "labels": labels}


@pytest.fixture(scope="module")
def encoder_bundle(data, tmp_path_factory):
    torch.set_num_threads(1)
    out = pretrain_encoder(flux=data["flux"][:500], ivar=data["ivar"][:500], encoder_config=TINY,
                           config=EncoderTrainConfig(epochs=4, batch_size=32, lr=2e-3, warmup=10, device="cpu"))
    return out.save(tmp_path_factory.mktemp("enc") / "enc", grid=GRID, preprocess=PREPROCESS, provenance=PROV)


@pytest.fixture(scope="module")
def emb_bundle(data, encoder_bundle, tmp_path_factory):
    torch.set_num_threads(1)
    lab = {k: data["labels"][k][:500] for k in ("FEH", "LOGG")}
    trained = pretrain_embedding(flux=data["flux"][:500], labels=lab, encoder=encoder_bundle, hidden=(32, 16, 8),
                                 ensemble=2, config=TrainConfig(epochs=15, lr=3e-3, batch_size=32, device="cpu"))
    return trained.save(tmp_path_factory.mktemp("emb") / "emb", provenance=PROV)


def test_encoder_bundle_round_trips_and_is_not_a_label_model(encoder_bundle, data):
    again = load_encoder(encoder_bundle.path, grid=GRID, preprocess=PREPROCESS)
    x = torch.from_numpy(data["flux"][:5])
    assert torch.equal(again.encoder(x), encoder_bundle.encoder(x))
    m = json.loads((again.path and open(f"{again.path}/manifest.json").read()))
    assert m["kind"] == "encoder" and m["architecture"]["n_tokens"] == 19 and m["training"]["best_epoch"] >= 0
    with pytest.raises(BundleError, match="spectral encoder, not a label model"):
        load_bundle(encoder_bundle.path)
    with pytest.raises(BundleError, match="another model grid"):
        load_encoder(encoder_bundle.path, grid={**GRID, "dloglam": 2e-4})


def test_embedding_bundle_round_trips_and_predicts(emb_bundle, data):
    assert emb_bundle.manifest["architecture"]["kind"] == "embedding-mlp" and emb_bundle.n_in == NPIX
    again = load_bundle(emb_bundle.path)
    flux, ivar = data["flux"][500:], data["ivar"][500:]
    p1 = predict(emb_bundle, flux=flux, ivar=ivar, device="cpu")
    p2 = predict(again, flux=flux, ivar=ivar, device="cpu", batch_size=37)
    np.testing.assert_allclose(p1.values, p2.values, atol=1e-5)
    assert p1.label_names == ["FEH", "LOGG"]
    true = np.stack([data["labels"]["FEH"][500:], data["labels"]["LOGG"][500:]], 1)
    rms = np.sqrt(np.mean((p1.values - true) ** 2, axis=0))
    assert np.all(rms < 0.6 * true.std(axis=0)), rms  # well beyond predicting the mean
    assert np.all(p1.noise_std > 0) and np.all(p1.ensemble_std > 0)
    # Members share one frozen encoder: it is one module, and each batch is embedded once.
    assert again.members[0].encoder is again.members[1].encoder
    # Noise propagation: lower S/N, larger propagated error (first-order through encoder and head).
    noisy = predict(again, flux=flux[:50], ivar=ivar[:50] / 16.0, device="cpu")
    assert np.median(noisy.noise_std / p1.noise_std[:50]) == pytest.approx(4.0, rel=0.05)
    mc = predict(again, flux=flux[:50], ivar=ivar[:50], noise="mc", mc_draws=48, seed=1)
    assert np.median(mc.noise_std / p1.noise_std[:50]) == pytest.approx(1.0, abs=0.3)


def test_embedding_bundle_refuses_another_encoder_and_tampered_weights(emb_bundle, data, tmp_path):
    copy_ = tmp_path / "copy"
    shutil.copytree(emb_bundle.path, copy_)
    torch.manual_seed(99)
    other = save_encoder(tmp_path / "other", encoder=SpectrumEncoder(TINY), grid=GRID, preprocess=PREPROCESS,
                         provenance=PROV)
    shutil.rmtree(copy_ / "encoder")
    shutil.copytree(other.path, copy_ / "encoder")
    with pytest.raises(BundleError, match="different encoder"):
        load_bundle(copy_)
    shutil.rmtree(copy_ / "encoder")
    with pytest.raises(BundleError, match="lacks its encoder folder"):
        load_bundle(copy_)
    tampered = tmp_path / "tampered"
    shutil.copytree(emb_bundle.path, tampered)
    w = bytearray((tampered / "encoder" / "weights.safetensors").read_bytes())
    w[-3] ^= 0x01
    (tampered / "encoder" / "weights.safetensors").write_bytes(bytes(w))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(tampered)


@pytest.mark.parametrize("method", ["adapter", "lora", "full"])
def test_finetune_embedding_methods_start_at_zero_shot_and_round_trip(method, emb_bundle, data, tmp_path):
    torch.set_num_threads(1)
    sl = slice(500, 620)
    flux = data["flux_b"][sl]
    lab = {"FEH": data["labels"]["FEH"][sl], "LOGG": data["labels"]["LOGG"][sl]}
    zero = predict(emb_bundle, flux=flux, ivar=data["ivar_b"][sl], noise="none").values
    cfg = TrainConfig(epochs=3, lr=1e-3, batch_size=32, device="cpu")
    # The structure before training reproduces zero-shot (LoRA B = 0, adapter output layer = 0; with a
    # vanishing learning rate and BatchNorm statistics frozen nothing else moves).
    start = finetune(emb_bundle, flux=flux, labels=lab, method=method,
                     config=TrainConfig(epochs=1, lr=1e-12, batch_size=32, device="cpu", freeze_bn=True))
    x = torch.from_numpy(flux)
    with torch.inference_mode():
        p0 = torch.stack([m.eval()(x) for m in start.members]).mean(0).numpy() * emb_bundle.stds + emb_bundle.means
    np.testing.assert_allclose(p0, zero, atol=2e-4)
    tuned = finetune(emb_bundle, flux=flux, labels=lab, method=method, config=cfg)
    member = tuned.members[0]
    assert isinstance(member, EmbeddingMember)
    enc_trainable = [n for n, p in member.encoder.named_parameters() if p.requires_grad]
    if method == "adapter":
        assert tuned.encoder_mode == "frozen" and not enc_trainable
    elif method == "lora":
        assert tuned.encoder_mode == "lora" and enc_trainable and all(".lora_" in n for n in enc_trainable)
        assert tuned.encoder_lora == {"rank": 4, "alpha": 8.0}
    else:
        assert tuned.encoder_mode == "full" and len(enc_trainable) == len(list(member.encoder.parameters()))
    with torch.inference_mode():
        before = torch.stack([m.eval()(x) for m in tuned.members]).mean(0).numpy() * emb_bundle.stds + emb_bundle.means
    saved = tuned.save(tmp_path / method, provenance=PROV, grid=GRID, preprocess=PREPROCESS)
    after = predict(load_bundle(saved.path), flux=flux, ivar=data["ivar_b"][sl], noise="none").values
    np.testing.assert_allclose(after, before, atol=1e-4)  # LoRA merged on load: same predictions
    assert saved.manifest["architecture"]["encoder"]["mode"] == tuned.encoder_mode
    if method == "lora":  # only the factors are stored, the base weights come from the pinned encoder
        from safetensors import safe_open

        with safe_open(str(tmp_path / method / "weights.safetensors"), "pt") as fh:
            enc_keys = [k for k in fh.keys() if ".encoder." in k]
        assert len(enc_keys) == 2 * 4 * TINY.layers and all(".lora_" in k for k in enc_keys)
    with pytest.raises(ConfigError, match="already fine-tuned"):
        finetune(saved, flux=flux, labels=lab, method="adapter", config=cfg)
