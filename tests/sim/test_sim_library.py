"""The stellar-library reader (a tiny wheel-shaped zip made here) and the held-out rule."""

import io
import zipfile

import numpy as np
import pytest
from astropy.io import fits

from catalog_tool.sim.library import MILES_DIR, assert_no_heldout, is_heldout, read_miles


def _fits_bytes(flux, crval=3540.5, cdelt=0.9):
    hdu = fits.PrimaryHDU(np.asarray(flux, dtype=np.float32))
    hdu.header.update(CRVAL1=crval, CDELT1=cdelt, CRPIX1=1.0)
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


def test_heldout_rule_is_id_divisible_by_five():
    ids = np.array([5, 10, 11, 999, 1000, 24])
    assert is_heldout(ids).tolist() == [True, True, False, False, True, False]
    assert_no_heldout(np.array([1, 2, 3, 4, 6]), what="fit")
    with pytest.raises(AssertionError, match="m0010"):
        assert_no_heldout(np.array([1, 10]), what="fit")


def test_read_miles_from_a_wheel_shaped_zip(tmp_path):
    wheel = tmp_path / "sdss_mangadap-4.5.0-py3-none-any.whl"
    db = "# id teff logg feh\n1 5000 4.5 -0.5\n2 99999 9999 9999\n5 6000 4.0 -1.5\n7 4500 2.0 0.1\n"
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(MILES_DIR + "MILES_params.db", db)
        for star in (1, 2, 5):
            zf.writestr(MILES_DIR + f"s_m{star:04d}V.fits", _fits_bytes(1 + rng.random(50)))
        zf.writestr(MILES_DIR + "s_m0007V.fits", _fits_bytes(rng.random(40)))  # other grid: left out
    lib = read_miles(wheel)
    assert lib.ids.tolist() == [1, 5]  # 2 has no labels, 7 is on another grid
    assert lib.labels.tolist() == [[5000, 4.5, -0.5], [6000, 4.0, -1.5]]
    assert lib.flux.shape == (2, 50)
    air = 3540.5 + 0.9 * np.arange(50)
    assert np.all(lib.wave > air) and np.all(lib.wave - air < 2.5)  # vacuum is ~1.0-1.5 A redder
    assert lib.select(~is_heldout(lib.ids)).ids.tolist() == [1]


def _toy_library(ids=(1, 2, 3, 5, 10)):
    """A small library made from the emulator (MILES-like grid and resolution), ids chosen so two are held out."""
    from catalog_tool.sim.library import StellarLibrary
    from catalog_tool.sim.specmodel import SpectralModel, air_to_vacuum

    wave = air_to_vacuum(3540.5 + 0.9 * np.arange(4300))
    labels = np.array([[4800, 2.5, -0.2], [5800, 4.3, 0.1], [6400, 4.0, -1.2], [5200, 3.0, -1.8],
                       [7000, 4.1, 0.0]][:len(ids)], dtype=float)
    emu = SpectralModel.load_default()
    flux = emu.render(teff=labels[:, 0], logg=labels[:, 1], feh=labels[:, 2], alphafe=np.zeros(len(ids)), wave=wave)
    flux = flux * np.array([3.0, 0.5, 1.0, 2.0, 7.0])[:len(ids), None]  # arbitrary per-star scales
    return StellarLibrary(name="toy", ids=np.array(ids), labels=labels, wave=wave, flux=flux, fwhm=2.5, source="test")


def test_library_model_renders_the_real_spectrum_and_fills_outside_it():
    from catalog_tool.sim.library import LibraryModel

    lib = _toy_library()
    model = LibraryModel(lib).take([3, 0, 0])
    assert model.ids.tolist() == [5, 1, 1]
    assert model.label_table()["TEFF"].tolist() == [5200, 4800, 4800]
    wave = np.linspace(3400.0, 9000.0, 3000)
    out = model.render_rows(rows=np.array([0, 2, 1]), wave=wave)
    inside = (wave > lib.wave[0]) & (wave < lib.wave[-1])
    ref = np.interp(wave[inside], lib.wave, lib.flux[3])
    assert np.allclose(out[0, inside], ref, rtol=1e-9)
    assert np.array_equal(out[1], out[2])
    # Outside the library's range: the emulator, scaled to join the real spectrum smoothly.
    red = wave > lib.wave[-1]
    lo = np.median(out[0, (wave > lib.wave[-1] - 60) & inside])
    hi = np.median(out[0, (wave < lib.wave[-1] + 60) & red])
    assert abs(hi / lo - 1.0) < 0.05
    assert np.all(out[:, red] > 0) and np.all(np.isfinite(out))
    with pytest.raises(ValueError, match="label rows"):
        model.render_rows(rows=np.array([3]), wave=wave)


def test_simulators_render_each_star_from_its_own_library_row(tmp_path):
    from catalog_tool.io.lamost import read_lamost_files
    from catalog_tool.sim.lamost import simulate_lamost
    from catalog_tool.sim.library import LibraryModel

    lib = _toy_library()
    model = LibraryModel(lib).take([4, 0, 4, 2])  # hot, cool, hot, metal-poor
    labels = {**model.label_table(), "SNR": np.full(4, 200.0), "RV": np.zeros(4)}
    res = simulate_lamost(tmp_path / "lam", seed=1, labels=labels, layout="dr10", model=model)
    batch, failed = read_lamost_files([f"{res.out}/{f}" for f in res.files])
    assert not failed
    arm = next(iter(batch.arms.values()))
    w = np.broadcast_to(arm.wave, arm.flux.shape)[0]
    band = (w > 4000) & (w < 5500)
    norm = arm.flux[:, band] / np.median(arm.flux[:, band], axis=1, keepdims=True)
    emu = lib.flux / np.median(lib.flux[:, (lib.wave > 4000) & (lib.wave < 5500)], axis=1, keepdims=True)
    ref = np.array([np.interp(w[band], lib.wave, emu[r]) for r in range(5)])
    # Each file correlates best with its own library star (rows 4, 0, 4, 2).
    corr = np.corrcoef(np.vstack([norm, ref]))[:4, 4:]
    assert corr.argmax(axis=1).tolist() == [4, 0, 4, 2]


def test_read_stelib_takes_miles_labels_and_ids_by_star_name(tmp_path):
    from catalog_tool.sim.library import STELIB_DIR, is_heldout, read_stelib

    wheel = tmp_path / "sdss_mangadap-4.5.0-py3-none-any.whl"
    db = "# id teff logg feh\n3 5000 4.5 -0.5\n10 6000 4.0 -1.5\n12 99999 9999 9999\n"
    names = ("Name                  MILES   CaT\n                      s????\n - - - -\n"
             "HD002857              0003         A2\n"
             "HD005820              0010         G0\n"
             "BD+002058A            0012         sd:F\n")
    rng = np.random.default_rng(1)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(MILES_DIR + "MILES_params.db", db)
        zf.writestr(MILES_DIR + "paramsMILES_v9.1.txt", names)
        for star, crval in (("HD005820", 3199.5), ("HD002857", 3201.0), ("BD+002058A", 3200.0), ("G319", 3200.0)):
            zf.writestr(STELIB_DIR + f"STELIB_v3.2_{star}.fits", _fits_bytes(1 + rng.random(6700), crval=crval, cdelt=1.0))
    lib = read_stelib(wheel)
    # G319 is not a MILES star; BD+002058A has no MILES parameters
    assert lib.ids.tolist() == [3, 10] and lib.name == "STELIB"
    assert lib.labels.tolist() == [[5000, 4.5, -0.5], [6000, 4.0, -1.5]]
    assert is_heldout(lib.ids).tolist() == [False, True]  # the MILES rule holds out the same star
    assert lib.flux.shape[0] == 2 and lib.wave[0] > 3210 and lib.wave[-1] > 9480 and lib.fwhm == 3.4
