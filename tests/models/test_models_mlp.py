"""The paper's MLP: parameter count, layer order, input size from the config, member shapes."""

from __future__ import annotations

import pytest
import torch

from catalog_tool.errors import ConfigError
from catalog_tool.models.mlp import MLPConfig, PerLabelStack, SpectrumMLP, build_member, count_parameters


def test_paper_network_has_2_06_million_parameters():
    net = SpectrumMLP(MLPConfig(n_in=1462))
    # Linear: 1462*1024+1024 + 1024*512+512 + 512*64+64 + 64+1; BatchNorm: 2*(1024+512+64)
    assert count_parameters(net) == 2_055_809 + 3_200 == 2_059_009


def test_layer_order_and_penultimate_width():
    net = SpectrumMLP(MLPConfig(n_in=30, hidden=(16, 8, 4)))
    kinds = [type(m).__name__ for m in net.body]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 3
    net.eval()
    x = torch.randn(5, 30)
    assert net.features(x).shape == (5, 4)
    assert torch.equal(net(x), net.out(net.features(x)))


def test_input_size_comes_from_config():
    net = SpectrumMLP(MLPConfig(n_in=321, hidden=(8, 4)))
    assert net.body[0].in_features == 321
    with pytest.raises(RuntimeError):
        net.eval()(torch.randn(2, 1462))


@pytest.mark.parametrize("heads, kind", [("per-label", PerLabelStack), ("multi-label", SpectrumMLP)])
def test_member_maps_to_all_labels(heads, kind):
    torch.manual_seed(0)
    m = build_member(config=MLPConfig(n_in=40, hidden=(8, 4)), n_labels=3, heads=heads).eval()
    assert isinstance(m, kind)
    out = m(torch.randn(7, 40))
    assert out.shape == (7, 3)
    if heads == "per-label":
        # Column j depends on network j only.
        x = torch.randn(7, 40)
        before = m(x)
        with torch.no_grad():
            m.nets[1].out.bias += 5.0
        after = m(x)
        assert torch.allclose(after[:, 1] - before[:, 1], torch.full((7,), 5.0))
        assert torch.equal(after[:, [0, 2]], before[:, [0, 2]])


def test_bad_config_is_refused_with_all_problems():
    with pytest.raises(ConfigError, match="n_in.*dropout"):
        MLPConfig(n_in=0, dropout=1.5)
    with pytest.raises(ConfigError, match="heads"):
        build_member(config=MLPConfig(n_in=4), n_labels=1, heads="shared")
