"""Bundles: round trip, verification, refusal of tampered or mismatched bundles, lookup by name."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from catalog_tool.errors import BundleError, ConfigError
from catalog_tool.models import bundle as bundle_mod
from catalog_tool.models import manifest as manifest_mod
from catalog_tool.models.bundle import load_bundle, make_provenance, save_bundle
from catalog_tool.models.infer import predict
from catalog_tool.train.finetune import finetune
from catalog_tool.train.loop import TrainConfig

from toy_model_settings import GRID, PREPROCESS


@pytest.fixture
def copy_of(saved, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(saved.path, dst)
    return dst


def _rewrite_manifest(path, change):
    m = json.loads((path / "manifest.json").read_text())
    change(m)
    (path / "manifest.json").write_text(json.dumps(m))


def test_round_trip_gives_identical_predictions(trained, saved, toy):
    flux, ivar, _ = toy["test"]
    again = load_bundle(saved.path)
    a = predict(saved, flux=flux, ivar=ivar)
    b = predict(again, flux=flux, ivar=ivar)
    assert np.array_equal(a.values, b.values) and np.array_equal(a.errors, b.errors)
    with torch.inference_mode():
        direct = torch.stack([m.eval()(torch.from_numpy(flux)) for m in trained.members]).mean(0).numpy()
    assert np.allclose(a.values[:, 1], direct[:, 1] * trained.labels[1].std + trained.labels[1].mean, atol=1e-4)
    man = again.manifest
    assert man["format_version"] == 1 and man["ensemble_size"] == 3 and man["grid"] == GRID
    assert man["preprocess"] == PREPROCESS and [lab["name"] for lab in man["labels"]] == ["FEH", "LOGG"]
    assert man["provenance"]["command"] == "pytest" and man["provenance"]["seed"] == 3
    assert man["training"]["stage"] == "pretrain" and len(man["weights"]["sha256"]) == 64
    assert load_bundle(saved.path, grid=dict(GRID), preprocess=dict(PREPROCESS)).sha256 == saved.sha256


def test_tampered_weights_are_refused(copy_of):
    w = copy_of / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight
    w.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match the sha256"):
        load_bundle(copy_of)


def test_bundle_of_another_grid_is_refused(copy_of):
    with pytest.raises(BundleError, match="another model grid: dloglam=0.0001 in the bundle but 0.0002 asked"):
        load_bundle(copy_of, grid={**GRID, "dloglam": 2e-4})
    with pytest.raises(BundleError, match="preprocessing settings: rest_frame"):
        load_bundle(copy_of, preprocess={**PREPROCESS, "rest_frame": True})
    _rewrite_manifest(copy_of, lambda m: m["grid"].update(npix=1462))
    with pytest.raises(BundleError, match=r"network input \(200 px\) does not match its grid \(1462 px\)"):
        load_bundle(copy_of)


def test_unknown_format_version_is_refused(copy_of):
    _rewrite_manifest(copy_of, lambda m: m.update(format_version=2))
    with pytest.raises(BundleError, match="format version 2"):
        load_bundle(copy_of)


def test_missing_tensor_is_refused_even_with_a_matching_checksum(copy_of):
    w = copy_of / "weights.safetensors"
    tensors = load_file(w)
    del tensors["member2.nets.1.out.weight"]
    save_file(tensors, w)
    import hashlib
    digest = hashlib.sha256(w.read_bytes()).hexdigest()
    _rewrite_manifest(copy_of, lambda m: m["weights"].update(sha256=digest))
    with pytest.raises(BundleError, match="lack 1 tensor.*member2.nets.1.out.weight"):
        load_bundle(copy_of)


def test_missing_files_and_unknown_names(tmp_path, copy_of):
    (copy_of / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(copy_of)
    with pytest.raises(BundleError, match="no model bundle folder at 'no-such-model'"):
        load_bundle("no-such-model")


def test_bundled_models_are_found_by_name(saved, tmp_path, monkeypatch):
    root = tmp_path / "pkgdata"
    shutil.copytree(saved.path, root / "toy-v1")
    monkeypatch.setattr(manifest_mod, "bundled_root", lambda: root)
    assert bundle_mod.bundled_names() == ["toy-v1"]
    assert load_bundle("toy-v1").sha256 == saved.sha256


def test_adapter_and_lora_live_in_the_same_bundle(saved, toy, tmp_path):
    flux, ivar, labels = toy["test"]
    cfg = TrainConfig(epochs=1, lr=1e-3, batch_size=32, device="cpu")
    for method, marker in (("adapter", ".head."), ("lora", ".lora_B")):
        te = finetune(saved, flux=flux[:200], labels={"FEH": labels["FEH"][:200]}, method=method, config=cfg)
        b = te.save(tmp_path / method, grid=GRID, preprocess=PREPROCESS,
                    provenance=make_provenance(command="pytest finetune", seed=0))
        names = load_file(tmp_path / method / "weights.safetensors").keys()
        assert any(marker in n for n in names)
        assert b.manifest["architecture"]["finetune"]["method"] == method
        assert b.manifest["training"]["parent"]["sha256"] == saved.sha256
        # Loading rebuilds the same function (LoRA merged on load).
        with torch.inference_mode():
            x = torch.from_numpy(flux[200:260])
            want = torch.stack([m.eval()(x) for m in te.members]).mean(0).numpy()
        got = (predict(b, flux=flux[200:260], ivar=ivar[200:260], noise="none").values - saved.means) / saved.stds
        assert np.abs(got - want).max() < 1e-5


def test_float16_storage_is_checked_and_smaller(trained, saved, toy, tmp_path):
    flux, ivar, _ = toy["test"]
    with pytest.raises(ConfigError, match="check_flux"):
        trained.save(tmp_path / "h0", grid=GRID, preprocess=PREPROCESS, provenance={}, float16=True)
    half = trained.save(tmp_path / "h", grid=GRID, preprocess=PREPROCESS, provenance={}, float16=True,
                        check_flux=flux[:100])
    assert half.manifest["weights"]["dtype"] == "float16"
    assert half.manifest["weights"]["nbytes"] < 0.6 * saved.manifest["weights"]["nbytes"]
    a = predict(saved, flux=flux, ivar=ivar, noise="none").values
    b = predict(half, flux=flux, ivar=ivar, noise="none").values
    assert np.abs(a - b).max() < 1e-3


def test_save_refuses_a_mismatched_structure_or_grid(trained, tmp_path):
    with pytest.raises(BundleError, match="lack|not use"):
        save_bundle(tmp_path / "x", members=trained.members, config=trained.config, heads="multi-label",
                    labels=trained.labels, grid=GRID, preprocess=PREPROCESS, provenance={})
    with pytest.raises(ConfigError, match="does not match the grid"):
        trained.save(tmp_path / "y", grid={**GRID, "npix": 1462}, preprocess=PREPROCESS, provenance={})
    trained.save(tmp_path / "z", grid=GRID, preprocess=PREPROCESS, provenance={})
    with pytest.raises(BundleError, match="already holds a bundle"):
        trained.save(tmp_path / "z", grid=GRID, preprocess=PREPROCESS, provenance={})


def test_weights_file_holds_no_pickle(saved):
    raw = (saved.path and open(f"{saved.path}/weights.safetensors", "rb").read())
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    assert header["__metadata__"]["format"] == "stxcat-model-bundle"
    assert b"\x80\x04" not in raw[:16] and b"PK" != raw[:2]  # neither a pickle nor a torch zip


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(labels="FEH"), "entry 'labels' must be a list"),
    (lambda m: m.update(labels=[]), "lists no labels"),
    (lambda m: m["labels"][0].update(std=0.0), "label FEH has an unusable scaling"),
    (lambda m: m.pop("provenance"), r"lacks the entries \['provenance'\]"),
    (lambda m: m["architecture"].update(heads="multi-label"), "lack|not use"),
    (lambda m: m.update(ensemble_size=4), "lack 1|lack [0-9]+ tensor"),
])
def test_malformed_manifests_are_refused_in_one_sentence(copy_of, change, message):
    _rewrite_manifest(copy_of, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(copy_of)


def test_same_weights_give_a_byte_identical_file(trained, tmp_path):
    """The weights' sha256 identifies the weights: saving them again gives the same bytes (with
    several metadata entries, safetensors wrote them in a different order from save to save)."""
    blobs = set()
    for i in range(8):
        b = trained.save(tmp_path / f"b{i}", grid=GRID, preprocess=PREPROCESS,
                         provenance=make_provenance(command=f"run {i}", seed=i))
        blobs.add((b.sha256, (tmp_path / f"b{i}" / "weights.safetensors").read_bytes()))
    assert len(blobs) == 1
