"""Masked and NaN pixels never leak; bad spectra give flagged rows, never exceptions."""

import numpy as np

from preprocess_factory import DESI_B, DESI_R, LAMOST, absorption, batch_from, smooth_continuum
from catalog_tool.batch import PAD_MASK_BIT
from catalog_tool.preprocess import ModelGrid, PreprocessSettings, preprocess_batch
from catalog_tool.preprocess.arms import join_arms
from catalog_tool.preprocess.continuum import CONT_NO_DATA, CONT_NONPOSITIVE
from catalog_tool.preprocess.masks import bad_pixels, interpolate_bad

GRID = ModelGrid()


def test_interpolate_bad_is_linear_between_good_neighbours():
    wave = np.array([1.0, 2, 3, 4, 5, 6])
    flux = np.array([[1.0, 9, 9, 4, 5, 6], [9, 2, 3, 9, 9, 9], [9, 9, 9, 9, 9, 9]])
    bad = np.array([[0, 1, 1, 0, 0, 0], [1, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]], bool)
    out = interpolate_bad(wave=wave, flux=flux, bad=bad)
    np.testing.assert_allclose(out, [[1, 2, 3, 4, 5, 6], [2, 2, 3, 3, 3, 3], [0, 0, 0, 0, 0, 0]])


def test_bad_pixels_rules():
    flux = np.array([[1.0, np.nan, 1, 1, 1]])
    ivar = np.array([[1.0, 1, 0, -1, np.inf]])
    mask = np.array([[0, 0, 0, 0, 0]], np.uint32)
    np.testing.assert_array_equal(bad_pixels(flux=flux, ivar=ivar, mask=mask), [[0, 1, 1, 1, 1]])
    mask[0, 0] = 4
    assert bad_pixels(flux=flux, ivar=ivar, mask=mask)[0, 0]


def _spectrum(rng, n=1):
    cont = smooth_continuum(DESI_B, n, rng)
    lines = np.linspace(3750, 5650, 80)
    return cont * absorption(DESI_B, lines, np.full(80, 0.3), np.full(80, 1.0))


def test_masked_and_nan_pixels_never_leak(rng):
    base = _spectrum(rng)[0]
    ivar = np.full(DESI_B.size, 0.5, np.float32)
    spoiled = [1200, 1500, 1800, 2100]  # 4560, 4800, 5040, 5280 A
    rows = []
    for spike in (1e6, np.nan):
        f = base.copy()
        iv = ivar.copy()
        m = np.zeros(DESI_B.size, np.uint32)
        f[spoiled[0]] = spike          # masked by the pipeline
        m[spoiled[0]] = 1
        f[spoiled[1]] = np.nan          # NaN flux
        iv[spoiled[2]] = 0              # zero ivar, absurd flux
        f[spoiled[2]] = -spike if np.isfinite(spike) else spike
        iv[spoiled[3]] = np.inf         # non-finite ivar
        f[spoiled[3]] = spike
        rows.append((f, iv, m))
    flux = np.vstack([r[0] for r in rows])
    ivar2 = np.vstack([r[1] for r in rows])
    mask = np.vstack([r[2] for r in rows])
    out = preprocess_batch(batch_from({"B": (DESI_B, flux, ivar2, mask)}, 2), grid=GRID,
                           settings=PreprocessSettings(), keep_continuum=True)
    assert np.isfinite(out.flux).all() and np.isfinite(out.ivar).all()
    # the two rows differ only in the values of bad pixels: outputs are identical
    np.testing.assert_array_equal(out.flux[0], out.flux[1])
    np.testing.assert_array_equal(out.ivar[0], out.ivar[1])
    for j in spoiled:
        near = np.abs(GRID.wave - DESI_B[j]) < 0.8  # grid pixels whose interpolation uses pixel j
        assert near.any() and (out.ivar[:, near] == 0).all()
        assert (out.flux[:, near] == 1.0).all()
    # only those few grid pixels are lost
    assert (out.ivar[0] == 0).sum() <= 8
    assert out.diagnostics["BAD_FRAC"][0] == np.float32((out.ivar[0] == 0).sum() / GRID.npix)
    assert out.diagnostics["PREPROC_OK"].all()


def test_bad_spectra_are_flagged_not_raised(rng):
    n = 5
    flux = _spectrum(rng, n).astype(np.float32)
    ivar = np.ones(flux.shape, np.float32)
    flux[1] = 0
    ivar[1] = 0                     # all zeros (an unassigned fibre)
    flux[2] = np.nan
    ivar[2] = np.nan                # all NaN
    flux[3] = 0                     # zero flux but ivar > 0: continuum 0
    flux[4, :1600] = np.nan         # half the window NaN
    batch = batch_from({"B": (DESI_B, flux, ivar)}, n)
    out = preprocess_batch(batch, grid=GRID, settings=PreprocessSettings())
    d = out.diagnostics
    np.testing.assert_array_equal(d["PREPROC_OK"], [True, False, False, False, True])
    assert d["CONT_STATUS"][1] & CONT_NO_DATA and d["CONT_STATUS"][2] & CONT_NO_DATA
    assert d["CONT_STATUS"][3] & CONT_NONPOSITIVE
    np.testing.assert_array_equal(d["N_GOOD"][1:3], [0, 0])
    np.testing.assert_array_equal(d["BAD_FRAC"][1:3], [1, 1])
    assert 0.55 < d["BAD_FRAC"][4] < 0.75
    assert d["SNR_MEDIAN"][1] == 0 and d["SNR_MEDIAN"][2] == 0
    assert np.isfinite(out.flux).all()
    assert (out.ivar[1:3] == 0).all()


def test_absurd_values_are_flagged_without_a_numpy_warning(rng):
    """Huge, infinite, NaN and negative inputs: flagged rows, finite outputs, and no RuntimeWarning
    (the arithmetic that overflows on them runs under np.errstate; nothing is silenced globally)."""
    import warnings

    n = 7
    flux = _spectrum(rng, n).astype(np.float32)
    ivar = np.ones(flux.shape, np.float32)
    with np.errstate(over="ignore"):
        flux[1] *= np.float32(1e37)  # overflows in the continuum fit and in ivar * cont**2
    flux[2] *= np.float32(1e20)      # fits, but the normalised ivar overflows
    flux[3, ::3] = np.inf
    ivar[4] = np.inf
    ivar[5] = -1.0
    flux[6] = np.float32(3e38)
    batch = batch_from({"B": (DESI_B, flux, ivar)}, n)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = preprocess_batch(batch, grid=GRID, settings=PreprocessSettings())
    d = out.diagnostics
    np.testing.assert_array_equal(d["PREPROC_OK"], [True, False, False, True, False, False, False])
    assert not d["CONT_OK"][[1, 2, 6]].any()
    assert np.isfinite(out.flux).all() and np.isfinite(out.ivar).all()
    assert (out.ivar[~d["PREPROC_OK"] & ~d["CONT_OK"]] == 0).all()
    old = np.seterr(all="raise")     # and no operation outside an errstate even tries to warn
    try:
        preprocess_batch(batch, grid=GRID, settings=PreprocessSettings())
    finally:
        np.seterr(**old)


def test_no_coverage_is_flagged(rng):
    # LAMOST-like rows with their own grids: one normal, one starting at 5000 A, one padded
    n = 3
    wave = np.full((n, LAMOST.size), np.nan)
    wave[0] = LAMOST
    wave[1] = LAMOST * 5000 / LAMOST[0]
    wave[2, :1500] = LAMOST[:1500]   # ends at 5224 A, NaN padding after
    flux = np.full(wave.shape, 50.0, np.float32)
    ivar = np.ones(wave.shape, np.float32)
    mask = np.zeros(wave.shape, np.uint32)
    mask[2, 1500:] = PAD_MASK_BIT
    flux[2, 1500:] = 0
    ivar[2, 1500:] = 0
    batch = batch_from({"LRS": (wave, flux, ivar, mask)}, n, survey="lamost")
    out = preprocess_batch(batch, grid=GRID, settings=PreprocessSettings())
    d = out.diagnostics
    np.testing.assert_array_equal(d["COVERED"], [True, False, False])
    assert 0.3 < d["COVERAGE"][1] < 0.6 and 0.6 < d["COVERAGE"][2] < 0.9
    assert (out.ivar[1][GRID.wave < 5000] == 0).all()   # never extrapolated
    assert (out.ivar[2][GRID.wave > wave[2, 1499]] == 0).all()
    assert (out.ivar[2][GRID.wave < wave[2, 1497]] > 0).all()
    assert not d["PREPROC_OK"][1:].any()

    # a DESI batch that only has the R arm does not reach the grid at all
    flux_r = np.ones((2, DESI_R.size), np.float32)
    batch = batch_from({"R": (DESI_R, flux_r, flux_r)}, 2)
    out = preprocess_batch(batch, grid=GRID, settings=PreprocessSettings())
    assert (out.diagnostics["COVERAGE"] == 0).all() and (out.ivar == 0).all()
    assert not out.diagnostics["PREPROC_OK"].any()


def test_empty_batch():
    batch = batch_from({"B": (DESI_B, np.zeros((0, DESI_B.size)), np.zeros((0, DESI_B.size)))}, 0)
    out = preprocess_batch(batch, grid=GRID, settings=PreprocessSettings())
    assert out.flux.shape == (0, GRID.npix)
    assert all(v.shape == (0,) for v in out.diagnostics.values())


def test_arm_overlap_combined_by_inverse_variance():
    # B and R overlap at 5760-5800 A on the same 0.8 A lattice
    fb = np.full((1, DESI_B.size), 10.0)
    fr = np.full((1, DESI_R.size), 20.0)
    batch = batch_from({"B": (DESI_B, fb, np.full(fb.shape, 1.0)),
                        "R": (DESI_R, fr, np.full(fr.shape, 3.0))}, 1)
    j = join_arms(batch, lo=5700, hi=5900, settings=PreprocessSettings())
    k = np.searchsorted(j.wave, 5780.0)
    assert j.wave[k] == 5780.0
    assert j.flux[0, k] == np.float32((10 * 1 + 20 * 3) / 4)
    assert j.ivar[0, k] == 4
    assert j.flux[0, 0] == 10 and j.flux[0, -1] == 20
    assert np.all(np.diff(j.wave) > 0.7)  # the overlap did not duplicate pixels


def test_result_does_not_depend_on_chunking(rng):
    n = 21
    flux = _spectrum(rng, n).astype(np.float32)
    flux += rng.normal(size=flux.shape).astype(np.float32) * 3
    flux[5, 100:300] = np.nan
    batch = batch_from({"B": (DESI_B, flux, np.full(flux.shape, 0.1, np.float32))}, n,
                       Z=rng.normal(0, 5e-4, n))
    s = PreprocessSettings(rest_frame=True)
    a = preprocess_batch(batch, grid=GRID, settings=s)
    b = preprocess_batch(batch, grid=GRID, settings=s, chunk_rows=8)
    # equal up to float32 rounding (matrix products of different shapes sum in different orders)
    np.testing.assert_allclose(a.flux, b.flux, rtol=1e-5)
    np.testing.assert_allclose(a.ivar, b.ivar, rtol=1e-5)
    for k in a.diagnostics:
        np.testing.assert_allclose(a.diagnostics[k], b.diagnostics[k], rtol=1e-5)
    # row 5's NaN run (3680-3840 A) lies below the grid: interpolated for the fit, no grid loss
    assert a.diagnostics["CONT_OK"][5] and a.diagnostics["BAD_FRAC"][5] == 0
