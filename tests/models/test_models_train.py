"""Training: a tiny network beats the mean, the split is seeded, the log and best checkpoint work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from catalog_tool.errors import ConfigError
from catalog_tool.models.mlp import MLPConfig, SpectrumMLP
from catalog_tool.train.loop import TrainConfig, TrainLog, predict_scaled, split_indices, train_network
from catalog_tool.train.pretrain import label_specs, pretrain


def test_trained_network_beats_the_mean_by_far(trained, toy):
    flux, _, labels = toy["test"]
    pred = predict_scaled(trained.members[0], flux)
    for j, name in enumerate(["FEH", "LOGG"]):
        spec = trained.labels[j]
        value = pred[:, j] * spec.std + spec.mean
        rmse = np.sqrt(np.mean((value - labels[name]) ** 2))
        rmse_mean = np.sqrt(np.mean((spec.mean - labels[name]) ** 2))
        assert rmse < 0.45 * rmse_mean, (name, rmse, rmse_mean)


def test_split_is_nine_to_one_and_seeded():
    tr, va = split_indices(1000, val_fraction=0.1, seed=4)
    assert len(tr) == 900 and len(va) == 100
    assert not set(tr) & set(va)
    tr2, va2 = split_indices(1000, val_fraction=0.1, seed=4)
    tr3, _ = split_indices(1000, val_fraction=0.1, seed=5)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert not np.array_equal(tr, tr3)


def test_grouped_split_keeps_every_group_on_one_side():
    groups = np.repeat(np.arange(40), np.arange(40) % 4 + 1)  # groups of 1..4 rows
    tr, va = split_indices(groups.size, val_fraction=0.1, seed=3, groups=groups)
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(groups.size))
    assert not set(groups[tr]) & set(groups[va])
    assert 1 <= len(set(groups[va])) <= 10  # about 10% of the 40 groups, not of the rows
    again = split_indices(groups.size, val_fraction=0.1, seed=3, groups=groups)
    assert np.array_equal(again[1], va)
    # A group's side depends on its id and the seed only: the same stars are held out of any set.
    big = np.repeat(np.arange(2000), 2)
    _, va_big = split_indices(big.size, val_fraction=0.1, seed=3, groups=big)
    assert abs(len(set(big[va_big])) / 2000 - 0.1) < 0.02
    assert set(groups[va]) == set(big[va_big]) & set(groups)
    sub = big[big % 3 == 0]
    _, va_sub = split_indices(sub.size, val_fraction=0.1, seed=3, groups=sub)
    assert set(sub[va_sub]) == set(big[va_big]) & set(sub)
    with pytest.raises(ConfigError, match="at least 2 groups"):
        split_indices(5, groups=np.zeros(5))
    with pytest.raises(ConfigError, match="groups has shape"):
        split_indices(5, groups=np.zeros(4))


def test_huber_loss_is_squared_error_inside_and_linear_outside():
    from catalog_tool.train.loop import _masked_loss

    pred = torch.tensor([[0.5, 0.0], [4.0, 1.0]])
    y = torch.tensor([[0.0, float("nan")], [0.0, 1.0]])
    assert float(_masked_loss(pred, y)) == pytest.approx((0.25 + 16.0 + 0.0) / 3)
    assert float(_masked_loss(pred, y, 1.0)) == pytest.approx((0.25 + (2 * 4.0 - 1.0) + 0.0) / 3)
    with pytest.raises(ConfigError, match="huber_delta"):
        TrainConfig(huber_delta=0.0)


def test_label_scaling_and_domain_come_from_finite_values():
    y = np.array([[1.0, np.nan], [3.0, 10.0], [5.0, 30.0]])
    specs = label_specs(y, names=["FEH", "TEFF"])
    assert specs[0].mean == pytest.approx(3.0) and specs[0].std == pytest.approx(np.std([1, 3, 5]))
    assert specs[1].domain == (10.0, 30.0) and specs[1].unit == "K" and specs[0].unit == "dex"
    with pytest.raises(ConfigError, match="constant"):
        label_specs(np.ones((4, 1)), names=["FEH"])


def test_log_best_checkpoint_and_early_stopping(tmp_path, rng):
    torch.manual_seed(1)
    x = rng.normal(size=(300, 10)).astype(np.float32)
    y = (x[:, :1] * 2.0 - x[:, 1:2]).astype(np.float32)
    y[:5] = np.nan  # missing labels do not count
    net = SpectrumMLP(MLPConfig(n_in=10, hidden=(16, 8), dropout=0.0))
    log = TrainLog(tmp_path / "log.jsonl")
    tr, va = split_indices(300, seed=0)
    # A learning rate far too large: the loss soon stops improving and patience ends the run.
    res = train_network(net, x=x, y=y, train_idx=tr, val_idx=va, log=log, seed=0, tag={"member": 0},
                        config=TrainConfig(epochs=60, lr=0.5, batch_size=16, patience=3, device="cpu"))
    lines = [json.loads(s) for s in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(lines) == res["epochs_run"] and lines == log.records
    assert set(lines[0]) >= {"member", "epoch", "train_loss", "val_loss", "best", "seconds"}
    assert res["stopped_early"] and res["epochs_run"] < 60
    # The returned weights are the best epoch's: their validation loss is the best one logged.
    pred = predict_scaled(net, x[va])
    ok = np.isfinite(y[va])
    val = float(np.mean((pred[ok] - y[va][ok]) ** 2))
    assert val == pytest.approx(res["best_val_loss"], rel=1e-5)
    assert res["best_val_loss"] == pytest.approx(min([r["val_loss"] for r in lines] + [res["best_val_loss"]]))


def test_multi_label_head_and_missing_labels(toy):
    flux, _, labels = toy["train"]
    labels = dict(labels)
    feh = labels["FEH"].copy()
    feh[::3] = np.nan  # a third of the stars lack FEH
    labels["FEH"] = feh
    te = pretrain(flux=flux[:600], labels={"FEH": feh[:600], "TEFF": labels["TEFF"][:600]}, hidden=(16, 8),
                  heads="multi-label", ensemble=1, config=TrainConfig(epochs=2, lr=1e-3, batch_size=32, device="cpu"))
    assert te.members[0].out.out_features == 2 and te.config.n_out == 2
    assert te.summary["units"][0]["labels"] == "FEH+TEFF"
    assert te.labels[0].mean == pytest.approx(np.nanmean(feh[:600][np.isin(np.arange(600), split_indices(600)[0])]))


def test_bad_training_settings_listed_together():
    with pytest.raises(ConfigError, match="epochs.*batch_size.*val_fraction"):
        TrainConfig(epochs=0, batch_size=1, val_fraction=1.0)
