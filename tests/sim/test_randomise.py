"""Domain randomisation: each ingredient does what it says, alone, and is recorded in the truth."""

from __future__ import annotations

import dataclasses

import fitsio
import numpy as np
import pytest

from catalog_tool.errors import ConfigError
from catalog_tool.io.lamost import read_lamost_files
from catalog_tool.sim import instrument as ins
from catalog_tool.sim.desi import simulate_desi
from catalog_tool.sim.lamost import simulate_lamost
from catalog_tool.sim.randomise import (
    INGREDIENTS, TRUTH_COLUMNS, DomainRandomisation, broaden_rows, calibration_wiggles, ccm89_extinction,
    draw_parameters, masked_runs)


def test_ccm89_matches_the_published_curve():
    wave = np.array([5495.0, 4405.0, 3650.0, 8000.0])  # ~V, ~B, ~U, ~I
    t = ccm89_extinction(wave=wave, ebv=np.array([1.0, 0.0]))
    a = -2.5 * np.log10(t[0])
    assert a[0] == pytest.approx(3.1, abs=0.02)           # A_V = R_V E(B-V)
    assert a[1] - a[0] == pytest.approx(1.0, abs=0.06)     # E(B-V) = A_B - A_V
    assert a[2] / a[0] == pytest.approx(1.57, abs=0.05)    # A_U / A_V (CCM89 Table 3: 1.569)
    assert a[3] < a[0]
    assert np.all(t[1] == 1.0)


def test_broaden_rows_widens_a_line_by_the_drawn_fwhm():
    grid = ins.FineGrid.covering(4900.0, 5100.0, vmax=0.0, dloglam=5e-6)
    line = np.exp(-0.5 * ((grid.wave - 5000.0) / 0.2) ** 2)  # FWHM 0.47 A
    flux = np.stack([line, line, line])
    out = broaden_rows(flux=flux, grid=grid, fwhm=np.array([0.0, 1.0, 2.0]), slope=np.zeros(3),
                       wrange=(4900.0, 5100.0))
    assert np.array_equal(out[0], line)  # 0: untouched

    def fwhm(y):
        above = grid.wave[y > 0.5 * y.max()]
        return above[-1] - above[0]

    for i, extra in ((1, 1.0), (2, 2.0)):
        assert fwhm(out[i]) == pytest.approx(np.hypot(fwhm(line), extra), rel=0.05)
        assert out[i].sum() == pytest.approx(line.sum(), rel=1e-6)  # flux kept


def test_masked_runs_have_the_asked_number_and_lengths():
    rng = np.random.default_rng(3)
    m = masked_runs(runs=np.array([0, 1, 3, 0]), npix=2000, rng=rng, min_len=10, max_len=20)
    assert not m[0].any() and not m[3].any()
    assert 10 <= m[1].sum() <= 20
    assert 10 <= m[2].sum() <= 60


def test_wiggles_have_the_asked_rms():
    wave = np.linspace(3600.0, 9800.0, 5000)
    w = calibration_wiggles(wave=wave, amplitude=np.full(400, 0.02), rng=np.random.default_rng(1))
    assert np.std(w - 1.0) == pytest.approx(0.02, rel=0.15)
    assert np.all(calibration_wiggles(wave=wave, amplitude=np.zeros(3), rng=np.random.default_rng(1)) == 1.0)


def test_switching_an_ingredient_off_changes_only_that_one():
    full = draw_parameters(50, settings=DomainRandomisation(), rng=np.random.default_rng(7))
    for ing in INGREDIENTS:
        part = draw_parameters(50, settings=DomainRandomisation().without(ing), rng=np.random.default_rng(7))
        changed = {c for c in TRUTH_COLUMNS if not np.array_equal(full[c], part[c])}
        assert changed, ing
        assert changed <= {"lsf": {"LSF_EXTRA", "LSF_SLOPE"}, "calibration": {"CAL_SCALE", "WIGGLE"},
                           "sky": {"SKY_RESID"}, "extinction": {"EBV"}, "masks": {"MASK_RUNS"}}[ing]
    off = draw_parameters(50, settings=DomainRandomisation.off(), rng=np.random.default_rng(7))
    assert not off["LSF_EXTRA"].any() and not off["EBV"].any() and not off["MASK_RUNS"].any()
    assert np.all(off["CAL_SCALE"] == 1.0)


def test_invalid_settings_are_refused_in_one_message():
    with pytest.raises(ConfigError, match="ebv_max.*lsf_slope|lsf_slope"):
        DomainRandomisation(ebv_max=-1.0, lsf_slope=1.5)
    with pytest.raises(ConfigError, match="calibration_scale"):
        DomainRandomisation(calibration_scale=(2.0, 1.0))
    with pytest.raises(ConfigError, match="unknown randomisation ingredients"):
        DomainRandomisation().without("dust")


def _stars(n, seed=0):
    rng = np.random.default_rng(seed)
    return {"TEFF": rng.uniform(4500, 6500, n), "LOGG": rng.uniform(2, 4.5, n), "FEH": rng.uniform(-1.5, 0.3, n),
            "ALPHAFE": np.full(n, 0.1), "SNR": np.full(n, 40.0)}


def test_desi_truth_records_the_draws_and_sky_residual_is_exactly_added(tmp_path):
    rz = DomainRandomisation(lsf_extra_fwhm=0.0, ebv_max=0.0, mask_runs=0.0, wiggle=0.0, calibration_scale=(1, 1),
                             sky_residual=0.05)
    a = simulate_desi(tmp_path / "a", pixels=1, seed=4, labels=_stars(12), resolution=False, checksum=False,
                      randomise=rz)
    b = simulate_desi(tmp_path / "b", pixels=1, seed=4, labels=_stars(12), resolution=False, checksum=False,
                      randomise=rz.without("sky"))
    ta, tb = fitsio.read(a.truth), fitsio.read(b.truth)
    assert set(TRUTH_COLUMNS) <= set(ta.dtype.names)
    star = np.char.strip(ta["KIND"].astype(str)) == "star"
    assert np.any(ta["SKY_RESID"][star] != 0) and np.all(tb["SKY_RESID"] == 0)
    sky = ins.sky_spectrum(wave=ins.desi_wave("B"), fwhm=np.full(ins.DESI_ARMS["B"][1], 1.8))
    fa = fitsio.read(f"{a.out}/{a.files[0]}", "B_FLUX")
    fb = fitsio.read(f"{b.out}/{b.files[0]}", "B_FLUX")
    # Everything else is the same draw: the difference is the sky residual, eps * sky.
    diff = (fa - fb)[star]
    eps = ta["SKY_RESID"][star]
    ratio = np.median(diff[:, 100:2000] / sky[100:2000], axis=1)
    assert np.allclose(ratio, eps, atol=2e-3)
    other = np.isin(np.char.strip(ta["KIND"].astype(str)), ["sky", "unassigned"])
    assert other.any() and np.array_equal(fa[other], fb[other])  # only sources get a sky residual


def test_lamost_randomised_spectra_differ_where_each_ingredient_acts(tmp_path):
    base = DomainRandomisation.off()
    runs = {}
    for name, rz in (("off", base), ("ext", dataclasses.replace(base, ebv_max=1.0)),
                     ("mask", dataclasses.replace(base, mask_runs=3.0))):
        r = simulate_lamost(tmp_path / name, seed=9, labels=_stars(6, seed=2), layout="dr10", randomise=rz)
        runs[name] = (r, fitsio.read(r.truth))
    def read(r):
        b, failed = read_lamost_files([f"{r.out}/{f}" for f in r.files])
        assert not failed
        arm = next(iter(b.arms.values()))
        return arm.flux, arm.ivar, np.broadcast_to(arm.wave, arm.flux.shape)

    f0, i0, w0 = read(runs["off"][0])
    f1, _, w1 = read(runs["ext"][0])
    f2, i2, _ = read(runs["mask"][0])
    ebv = runs["ext"][1]["EBV"]
    assert np.all(ebv > 0)
    # Reddening: blue/red ratio falls with E(B-V) (noise is the same draw).
    blue, red = (w0 > 4000) & (w0 < 4500), (w0 > 7500) & (w0 < 8500)
    ratio0 = f0[:, blue[0]].mean(1) / f0[:, red[0]].mean(1)
    ratio1 = f1[:, blue[0]].mean(1) / f1[:, red[0]].mean(1)
    assert np.all(ratio1 < ratio0)
    # Masked runs: more pixels with zero inverse variance, as many as the truth says.
    assert runs["mask"][1]["MASK_RUNS"].sum() > 0
    assert (i2 == 0).sum() > (i0 == 0).sum()
