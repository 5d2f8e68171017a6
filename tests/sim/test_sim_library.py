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
