"""Process-wide thread settings are held for a block and restored (catalog_tool.threads)."""

from __future__ import annotations

import threading

import pytest
import torch
from threadpoolctl import threadpool_info

from catalog_tool.errors import ConfigError
from catalog_tool.models.threads import torch_threads
from catalog_tool.threads import ScopedSetting, single_thread_blas


def _openblas_threads():
    return [i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"]


def test_overlapping_blocks_in_two_threads_restore_once_the_last_ends():
    state = {"value": "original", "sets": []}

    def apply(v):
        before = state["value"]
        state["value"] = v
        state["sets"].append(v)
        return lambda: state.update(value=before)

    setting = ScopedSetting(apply)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with setting(1):
            a_in.set()
            b_in.wait()
        a_out.set()

    def b():
        a_in.wait()
        with setting(1):
            b_in.set()
            a_out.wait()
            seen["after_a"] = state["value"]  # A has left, B still holds it
    ta, tb = threading.Thread(target=a), threading.Thread(target=b)
    ta.start(), tb.start()
    ta.join(), tb.join()
    assert seen["after_a"] == 1
    assert state["value"] == "original" and not setting.held
    assert state["sets"] == [1]  # applied once for the two overlapping blocks


def test_single_thread_blas_is_scoped():
    import scipy.linalg  # noqa: F401  (its OpenBLAS too)

    before = _openblas_threads()
    with single_thread_blas():
        assert set(_openblas_threads()) == {1}
        with single_thread_blas():
            assert set(_openblas_threads()) == {1}
        assert set(_openblas_threads()) == {1}
    assert _openblas_threads() == before


def test_torch_threads_is_scoped():
    before = torch.get_num_threads()
    other = 2 if before != 2 else 1
    with torch_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="threads"):
        torch_threads(0)


def test_a_new_thread_follows_torch_threads():
    """OpenMP's thread count is per thread: a worker must adopt torch's (else other rounding, and speed)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from catalog_tool.models.threads import follow_torch_threads

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(7, 1462, generator=g), torch.randn(1462, 64, generator=g)
    with torch_threads(1):
        ref = x @ w

        def product():
            follow_torch_threads()
            y = x @ w  # before anything else: torch.get_num_threads() itself would fix the thread
            return torch.get_num_threads(), y

        n, y = ThreadPoolExecutor(1).submit(product).result()
    assert n == 1 and torch.equal(ref, y)
