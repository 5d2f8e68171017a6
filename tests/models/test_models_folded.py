"""Folded inference (BatchNorm folded, closed-form noise Jacobian) equals the modules + autograd path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from catalog_tool.models import folded, infer
from catalog_tool.models.adapters import ResidualHeadAdapter
from catalog_tool.models.mlp import MLPConfig, SpectrumMLP, build_member


def _unfolded(monkeypatch, bundle, **kw):
    """predict() through the nn.Modules and autograd (the path for members that cannot be folded)."""
    with monkeypatch.context() as m:
        m.setattr(infer, "fold_members", lambda members, device: None)
        return infer.predict(bundle, **kw)


class _Bundle:
    """The parts of a Bundle that predict() reads."""

    def __init__(self, members, names):
        self.members, self.label_names = members, names
        self.n_in = members[0].config.n_in if hasattr(members[0], "config") else members[0].nets[0].config.n_in
        self.means = np.array([0.5, -1.0, 5000.0][:len(names)])
        self.stds = np.array([0.3, 2.0, 700.0][:len(names)])
        self.name, self.manifest = "test", {}


def _trained_looking(member: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random BatchNorm statistics and affine terms (fresh ones are the identity and hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    for mod in member.modules():
        if isinstance(mod, torch.nn.BatchNorm1d):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            mod.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
            mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return member.eval()


@pytest.fixture()
def data():
    rng = np.random.default_rng(11)
    flux = rng.normal(1.0, 0.1, (90, 37)).astype(np.float32)
    ivar = rng.uniform(20.0, 400.0, (90, 37)).astype(np.float32)
    ivar[:, :5] = 0.0      # masked pixels carry no noise
    ivar[4, 10] = np.inf   # treated as no noise, as predict() always did
    flux[6, 3] = np.nan    # a bad row: NaN values and errors
    return flux, ivar


@pytest.mark.parametrize("heads", ["multi-label", "per-label"])
@pytest.mark.parametrize("noise_members", [1, None])
def test_folded_predictions_equal_module_predictions(monkeypatch, data, heads, noise_members):
    torch.manual_seed(0)
    config = MLPConfig(n_in=37, hidden=(24, 16, 8))
    members = [_trained_looking(build_member(config=config, n_labels=3, heads=heads), s) for s in range(3)]
    bundle = _Bundle(members, ["FEH", "LOGG", "TEFF"])
    flux, ivar = data
    kw = dict(flux=flux, ivar=ivar, batch_size=32, noise_members=noise_members)
    fast = infer.predict(bundle, **kw)
    slow = _unfolded(monkeypatch, bundle, **kw)
    assert folded.fold_members(members, torch.device("cpu")) is not None  # the fast path was taken
    for name in ("values", "ensemble_std", "noise_std", "errors"):
        a, b = getattr(fast, name), getattr(slow, name)
        ok = np.delete(np.arange(len(a)), 6)
        np.testing.assert_allclose(a[ok], b[ok], rtol=2e-5, atol=1e-6, err_msg=name)
    assert np.all(fast.noise_std[ok] > 0)
    assert np.all(np.isnan(fast.values[6])) and np.all(np.isnan(fast.errors[6])) and np.all(np.isnan(fast.noise_std[6]))


def test_noise_variance_is_the_input_gradient_sum(data):
    """Against autograd directly, one label at a time, on a multi-label member with 4 hidden layers."""
    torch.manual_seed(1)
    net = _trained_looking(SpectrumMLP(MLPConfig(n_in=37, n_out=2, hidden=(20, 12, 9, 6))), 4)
    flux, ivar = data
    x = torch.from_numpy(flux[7:27])  # past the NaN row
    s2 = torch.from_numpy(np.where(ivar[7:27] > 0, 1.0 / np.maximum(ivar[7:27], 1e-30), 0.0).astype(np.float32))
    s2[torch.isinf(torch.from_numpy(ivar[7:27]))] = 0.0
    (fm,) = folded.fold_members([net], torch.device("cpu"))
    outs, var = folded.noise_variance([fm], x, s2)
    for j in range(2):
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(xg)[:, j].sum(), xg)
        np.testing.assert_allclose(var[:, j].numpy(), (g.square() * s2).sum(1).numpy(), rtol=2e-5)
    np.testing.assert_allclose(outs[0].numpy(), net(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_refolded_when_weights_change_in_place(data):
    torch.manual_seed(2)
    net = _trained_looking(SpectrumMLP(MLPConfig(n_in=37, n_out=1, hidden=(8, 4))), 5)
    x = torch.from_numpy(data[0][:5])
    dev = torch.device("cpu")
    before = folded.fold_members([net], dev)[0](x)
    assert folded.fold_members([net], dev)[0] is folded.fold_members([net], dev)[0]  # cached
    with torch.no_grad():
        net.out.bias.add_(1.0)  # as an optimiser step does: in place
    after = folded.fold_members([net], dev)[0](x)
    np.testing.assert_allclose((after - before).numpy(), 1.0, rtol=1e-5)


def test_other_members_are_not_folded():
    torch.manual_seed(3)
    net = SpectrumMLP(MLPConfig(n_in=37, n_out=1, hidden=(8, 4)))
    dev = torch.device("cpu")
    assert folded.fold_members([net.train()], dev) is None            # BatchNorm in training mode
    adapted = ResidualHeadAdapter(SpectrumMLP(MLPConfig(n_in=37, n_out=1, hidden=(8, 4))), hidden=4).eval()
    assert folded.fold_members([net.eval(), adapted], dev) is None    # any other member: none folded
    assert folded.fold_members([net.eval()], dev) is not None


def test_noise_variance_at_the_papers_size_against_float64_autograd():
    """The closed form (batched matrix-vector sum over 1,462 pixels) to float32 rounding, 4 labels."""
    torch.manual_seed(4)
    net = _trained_looking(SpectrumMLP(MLPConfig(n_in=1462, n_out=4, hidden=(1024, 512, 64))), 6)
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.normal(1.0, 0.1, (48, 1462)).astype(np.float32))
    ivar = rng.uniform(10.0, 2000.0, (48, 1462)).astype(np.float32)
    ivar[:, rng.choice(1462, 80, replace=False)] = 0.0  # masked pixels carry no noise
    s2 = torch.from_numpy(np.where(ivar > 0, 1.0 / np.maximum(ivar, 1e-30), 0.0).astype(np.float32))
    (fm,) = folded.fold_members([net], torch.device("cpu"))
    _, var = folded.noise_variance([fm], x, s2)
    net64 = net.double()
    xg = x.double().requires_grad_(True)
    y = net64(xg)
    ref = np.stack([(torch.autograd.grad(y[:, j].sum(), xg, retain_graph=True)[0].square() * s2.double()).sum(1)
                    .numpy() for j in range(4)], axis=1)
    assert var.dtype == torch.float32 and var.shape == (48, 4)
    np.testing.assert_allclose(var.numpy(), ref, rtol=3e-5)
