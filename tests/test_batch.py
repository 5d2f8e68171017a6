import numpy as np
import pytest

from catalog_tool.batch import PAD_MASK_BIT, Arm, SpectraBatch


def _meta(n, start=0):
    return {
        "TARGETID": np.arange(start, start + n, dtype=np.int64),
        "SURVEY": np.array(["lamost"] * n),
        "PROGRAM": np.array(["dr7"] * n),
        "TARGET_RA": np.linspace(10, 20, n),
        "TARGET_DEC": np.linspace(-5, 5, n),
        "HEALPIX": np.zeros(n, np.int32),
        "FIBER_KIND": np.array(["target"] * n),
        "SOURCE": np.array([f"f{i}" for i in range(n)]),
        "ROW": np.zeros(n, np.int32),
    }


def _arm(n, npix, start):
    wave = np.tile(start + np.arange(npix, dtype=float), (n, 1))
    flux = np.arange(n * npix, dtype=np.float32).reshape(n, npix) + 1
    return Arm("LRS", wave, flux, np.ones_like(flux), np.zeros((n, npix), np.uint32))


def test_concat_pads_rows_of_different_length():
    a = SpectraBatch(arms={"LRS": _arm(2, 5, 4000.0)}, meta=_meta(2))
    b = SpectraBatch(arms={"LRS": _arm(1, 3, 4001.0)}, meta=_meta(1, start=10))
    c = SpectraBatch.concat([a, b])
    arm = c.arms["LRS"]
    assert arm.flux.shape == (3, 5)
    assert list(c.targetid) == [0, 1, 10]
    np.testing.assert_array_equal(arm.flux[2, :3], b.arms["LRS"].flux[0])
    assert np.all(arm.ivar[2, 3:] == 0) and np.all(np.isnan(arm.wave[2, 3:]))
    assert np.all(arm.mask[2, 3:] == PAD_MASK_BIT) and np.all(arm.mask[:2] == 0)


def test_take_keeps_rows_aligned():
    batch = SpectraBatch(arms={"LRS": _arm(4, 6, 4000.0)}, meta=_meta(4))
    sub = batch.take(np.array([3, 1]))
    assert list(sub.targetid) == [3, 1]
    np.testing.assert_array_equal(sub.arms["LRS"].flux, batch.arms["LRS"].flux[[3, 1]])


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="holds 2 spectra"):
        SpectraBatch(arms={"LRS": _arm(2, 5, 4000.0)}, meta=_meta(3))
    with pytest.raises(ValueError, match="lacks required"):
        SpectraBatch(arms={}, meta={"TARGETID": np.arange(2)})


def test_take_a_slice_gives_views():
    batch = SpectraBatch(arms={"LRS": _arm(5, 7, 4000.0)}, meta=_meta(5, start=10))
    part = batch.take(slice(1, 4))
    assert np.shares_memory(part.arms["LRS"].flux, batch.arms["LRS"].flux) and len(part) == 3
    assert part.meta["TARGETID"].tolist() == [11, 12, 13]
    assert np.array_equal(part.arms["LRS"].flux, batch.take(np.arange(1, 4)).arms["LRS"].flux)
