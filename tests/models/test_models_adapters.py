"""Fine-tuning structures: start exactly at zero-shot, train only their own parameters, LoRA merges."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from catalog_tool.errors import ConfigError
from catalog_tool.models.adapters import (LoRALinear, ResidualHeadAdapter, adapt_member, finetune_spec, merge_lora)
from catalog_tool.models.infer import predict
from catalog_tool.train.finetune import finetune
from catalog_tool.train.loop import TrainConfig, predict_scaled
from catalog_tool.train.synthetic import toy_spectra


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture
def shifted(toy, rng):
    """The test stars seen by another instrument (lines 1.6 times broader): 400 to tune on."""
    _, _, labels = toy["test"]
    flux, ivar = toy_spectra(labels=labels, npix=200, snr=60.0, rng=rng, broadening=1.6)
    return flux, ivar, labels


@pytest.mark.parametrize("method", ["adapter", "lora"])
def test_starts_at_zero_shot_and_trains_only_its_own_parameters(method, trained, shifted):
    flux, _, _ = shifted
    base = trained.members[0]
    zero = predict_scaled(copy.deepcopy(base), flux)
    member = adapt_member(copy.deepcopy(base), spec=finetune_spec(method))
    assert np.array_equal(predict_scaled(member, flux), zero)  # exactly, not approximately
    own = {n for n, p in member.named_parameters() if p.requires_grad}
    assert own and all(("head" in n) if method == "adapter" else ("lora_" in n) for n in own)
    before = _state(member)
    # A few steps through the real fine-tuning path (best checkpoint off by forcing progress).
    member.train()
    from catalog_tool.models.adapters import set_batchnorm_eval
    set_batchnorm_eval(member)
    opt = torch.optim.AdamW([p for p in member.parameters() if p.requires_grad], lr=1e-2)
    x = torch.from_numpy(flux[:64])
    for _ in range(5):
        loss = (member(x) - 1.0).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _state(member)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "training changed nothing"
    # Only the method's own tensors moved: no frozen weight, no BatchNorm statistic.
    assert all(("head" in k) if method == "adapter" else ("lora_" in k) for k in changed), sorted(changed)


def test_lora_merge_changes_predictions_by_less_than_1e_5(trained, shifted):
    flux, _, _ = shifted
    torch.manual_seed(0)
    member = adapt_member(copy.deepcopy(trained.members[0]), spec=finetune_spec("lora", rank=4, alpha=8))
    n_lora = sum(isinstance(m, LoRALinear) for m in member.modules())
    assert n_lora == 2 * 4  # every Linear of both per-label networks (3 hidden + output)
    with torch.no_grad():  # a non-trivial update, as after training
        for m in member.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0.0, 0.05)
    unmerged = predict_scaled(member, flux)
    merged = merge_lora(member)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    out = predict_scaled(merged, flux)
    assert np.abs(out - unmerged).max() < 1e-5
    assert np.abs(out - predict_scaled(trained.members[0], flux)).max() > 1e-2  # the update is real


def test_residual_head_reads_penultimate_features(trained):
    net = copy.deepcopy(trained.members[0].nets[0])
    ad = ResidualHeadAdapter(net, hidden=5)
    assert ad.head[0].in_features == 12 and ad.head[2].out_features == 1
    ad.train()
    assert not ad.base.training and ad.head.training


def test_finetune_methods_improve_on_shifted_data(saved, shifted):
    flux, ivar, labels = shifted
    tune = slice(0, 400)
    cfg = TrainConfig(epochs=6, lr=2e-3, batch_size=32, seed=1, device="cpu")
    scatter = {}
    for method in ("zero-shot", "adapter", "lora", "full"):
        te = finetune(saved, flux=flux[tune], labels={k: v[tune] for k, v in labels.items() if k in ("FEH", "LOGG")},
                      method=method, config=cfg)
        assert te.finetune["method"] == method
        members = te.members
        pred = np.mean([predict_scaled(m, flux[400:]) for m in members], axis=0)
        feh = pred[:, 0] * saved.stds[0] + saved.means[0]
        scatter[method] = float(np.sqrt(np.mean((feh - labels["FEH"][400:]) ** 2)))
    zero = predict(saved, flux=flux[400:], ivar=ivar[400:], noise="none").values[:, 0]
    assert scatter["zero-shot"] == pytest.approx(float(np.sqrt(np.mean((zero - labels["FEH"][400:]) ** 2))), rel=1e-5)
    for method in ("adapter", "lora", "full"):
        assert scatter[method] < scatter["zero-shot"], scatter
    # The bundle itself is untouched by fine-tuning (members were copied).
    again = predict(saved, flux=flux[400:], ivar=ivar[400:], noise="none").values[:, 0]
    assert np.array_equal(again, zero)


def test_finetune_result_depends_on_its_seed_not_on_what_ran_before(saved, shifted):
    """LoRA factors and dropout draw from the member's own seed: a fine-tuning run gives the same
    weights whatever consumed torch's random numbers before it, and leaves that state as it was."""
    flux, _, labels = shifted
    lab = {k: v[:200] for k, v in labels.items() if k in ("FEH", "LOGG")}
    cfg = TrainConfig(epochs=2, lr=2e-3, batch_size=32, seed=4, device="cpu")
    torch.manual_seed(0)
    a = finetune(saved, flux=flux[:200], labels=lab, method="lora", config=cfg)
    torch.manual_seed(1)
    torch.rand(1000)
    state = torch.random.get_rng_state()
    b = finetune(saved, flux=flux[:200], labels=lab, method="lora", config=cfg)
    assert torch.equal(torch.random.get_rng_state(), state)
    for ma, mb in zip(a.members, b.members):
        for (ka, va), (_, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
            assert torch.equal(va, vb), ka
    c = finetune(saved, flux=flux[:200], labels=lab, method="lora", config=dataclasses.replace(cfg, seed=5))
    assert not all(torch.equal(va, vc) for va, vc in zip(a.members[0].state_dict().values(),
                                                         c.members[0].state_dict().values()))


def test_full_with_frozen_batchnorm_keeps_statistics(saved, shifted):
    flux, _, labels = shifted
    te = finetune(saved, flux=flux[:200], labels={"FEH": labels["FEH"][:200]}, method="full",
                  config=TrainConfig(epochs=2, lr=1e-3, batch_size=32, freeze_bn=True, device="cpu"))
    a, b = saved.members[0].state_dict(), te.members[0].state_dict()
    stats = [k for k in a if "running_" in k]
    assert stats and all(torch.equal(a[k], b[k]) for k in stats)
    assert not torch.equal(a["nets.0.body.0.weight"], b["nets.0.body.0.weight"])
    # LOGG had no fine-tuning labels: its network is untouched and the summary says so.
    assert torch.equal(a["nets.1.body.0.weight"], b["nets.1.body.0.weight"])
    assert any(not u["trained"] and u["labels"] == "LOGG" for u in te.summary["units"])


def test_unknown_method_and_labels_refused(saved, shifted):
    flux, _, labels = shifted
    with pytest.raises(ConfigError, match="unknown fine-tuning method 'prompt'"):
        finetune(saved, flux=flux, labels={"FEH": labels["FEH"]}, method="prompt")
    with pytest.raises(ConfigError, match="not outputs"):
        finetune(saved, flux=flux, labels={"MGFE": labels["FEH"]}, method="full")


def test_a_method_added_to_the_registry_works_everywhere(saved, shifted, tmp_path, monkeypatch):
    """Adding a method is its structure plus one registry entry (docs/models.md): here one that
    trains the biases only. Fine-tuning, the bundle written and loaded back, and the command line's
    choices and help all follow the registry; nothing else names a method."""
    from click.testing import CliRunner

    from catalog_tool.cli import main
    from catalog_tool.models.adapters import REGISTRY, FinetuneMethod
    from catalog_tool.models.bundle import load_bundle, make_provenance

    def biases_only(member, spec):
        for name, p in member.named_parameters():
            p.requires_grad_(name.endswith("bias"))
        return member

    monkeypatch.setitem(REGISTRY, "bitfit", FinetuneMethod(
        name="bitfit", summary="the biases only", spec=lambda **_: {"method": "bitfit"}, adapt=biases_only))
    flux, _, labels = shifted
    tuned = finetune(saved, flux=flux[:300], labels={"FEH": labels["FEH"][:300]}, method="bitfit",
                     config=TrainConfig(epochs=3, lr=1e-2, batch_size=32, device="cpu", seed=1))
    assert tuned.finetune == {"method": "bitfit"}
    before = dict(saved.members[0].named_parameters())
    moved = {n for n, p in tuned.members[0].named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(n.endswith("bias") for n in moved), sorted(moved)
    bundle = tuned.save(tmp_path / "bitfit", grid=saved.grid, preprocess=saved.preprocess,
                        provenance=make_provenance(command="pytest", seed=1))
    again = load_bundle(tmp_path / "bitfit")
    assert again.method == "bitfit" and again.sha256 == bundle.sha256
    np.testing.assert_array_equal(predict(again, flux=flux[:50], ivar=np.ones_like(flux[:50])).values,
                                  predict(bundle, flux=flux[:50], ivar=np.ones_like(flux[:50])).values)
    help_text = " ".join(CliRunner().invoke(main, ["finetune", "--help"], terminal_width=200).output.split())
    assert "[zero-shot|adapter|lora|full|bitfit]" in help_text and "bitfit: the biases only" in help_text
    with pytest.raises(ConfigError, match="choose one of zero-shot, adapter, lora, full, bitfit"):
        finetune_spec("bitfitt")
