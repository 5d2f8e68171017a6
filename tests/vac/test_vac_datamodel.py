"""The data model: valid units and UCDs, TCOMM-sized descriptions, tables built and checked."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.io.votable.ucd import check_ucd

from catalog_tool.vac import datamodel as dm
from vac_factory import assert_tables_equal, make_columns


def test_leading_columns_follow_design():
    assert dm.names()[:14] == (
        "TARGETID", "SURVEY", "PROGRAM", "HEALPIX", "TARGET_RA", "TARGET_DEC",
        "FEH", "FEH_ERR", "ALPHAFE", "ALPHAFE_ERR", "TEFF", "TEFF_ERR", "LOGG", "LOGG_ERR")
    for name in ("SNR", "FLAGS", "FLAG_BAD", "PRIMARY", "Z", "ZWARN", "SPECTYPE", "SOURCE"):
        assert name in dm.names()
    assert len(set(dm.names())) == len(dm.COLUMNS)
    assert dm.column("TARGETID").dtype == "i8"
    assert dm.column("FLAGS").dtype == "i8"
    assert dm.column("HEALPIX").dtype == "i4"
    assert dm.column("FEH").dtype == "f4"


@pytest.mark.parametrize("col", dm.COLUMNS, ids=lambda c: c.name)
def test_column_metadata_is_valid(col):
    if col.unit:
        u.Unit(col.unit, format="fits")  # raises on a unit the FITS standard does not know
    assert check_ucd(col.ucd, check_controlled_vocabulary=True), col.ucd
    assert 0 < len(col.description) <= 68 and col.description.isascii()  # one TCOMMn card value
    if col.null is not None:
        assert col.kind == "i"
        info = np.iinfo(col.np_dtype)
        assert info.min <= col.null <= info.max


def test_dex_quantities_have_blank_units_and_teff_kelvin():
    for name in ("FEH", "FEH_ERR", "ALPHAFE", "LOGG", "LOGG_ERR", "FEH_ENS_STD"):
        assert dm.column(name).unit == ""
    assert dm.column("TEFF").unit == "K" and dm.column("TEFF_ERR").unit == "K"
    assert dm.column("TARGET_RA").unit == "deg"


def test_empty_table_is_null_everywhere():
    t = dm.empty_table(3)
    assert t.dtype == dm.table_dtype() and len(t) == 3
    assert np.isnan(t["FEH"]).all() and np.isnan(t["TARGET_DEC"]).all()
    assert (t["ZWARN"] == -1).all() and (t["SOURCE_ROW"] == -1).all()
    assert (t["SURVEY"] == b"").all() and not t["PRIMARY"].any()
    assert (t["FLAGS"] == 0).all()


def test_to_table_fills_given_and_nulls_missing(rng):
    cols = make_columns(9, rng)
    del cols["FEH_ERR"]
    t = dm.to_table(cols)
    assert t.dtype == dm.table_dtype()
    np.testing.assert_array_equal(t["TARGETID"], cols["TARGETID"])
    np.testing.assert_allclose(t["TEFF"], cols["TEFF"].astype(np.float32))
    assert [s.decode() for s in t["SURVEY"]] == list(cols["SURVEY"])
    assert np.isnan(t["FEH_ERR"]).all() and np.isnan(t["FEH_ENS_STD"]).all()
    # a structured array round-trips too
    assert_tables_equal(dm.to_table(t), t)


def test_to_table_refuses_what_it_cannot_store(rng):
    cols = make_columns(4, rng)
    with pytest.raises(dm.DataModelError, match="WHATEVER"):
        dm.to_table({**cols, "WHATEVER": np.zeros(4)})
    with pytest.raises(dm.DataModelError, match="longer than its 8"):
        dm.to_table({**cols, "SURVEY": np.array(["main", "a-very-long-survey", "x", "y"])})
    with pytest.raises(dm.DataModelError, match="expected integers"):
        dm.to_table({**cols, "ZWARN": np.array([0.5, 0, 0, 0])})
    with pytest.raises(dm.DataModelError, match="out of range"):
        dm.to_table({**cols, "HEALPIX": np.array([2**40, 0, 0, 0])})
    with pytest.raises(dm.DataModelError, match="different lengths"):
        dm.to_table({**cols, "FEH": np.zeros(3)})


def test_validate_table(rng):
    t = dm.to_table(make_columns(5, rng))
    dm.validate_table(t)
    # unicode strings as fitsio reads them back are fine
    as_read = t.astype([(n, "U" + str(t.dtype[n].itemsize) if t.dtype[n].kind == "S" else t.dtype[n])
                        for n in t.dtype.names])
    dm.validate_table(as_read)
    with pytest.raises(dm.DataModelError, match="FEH: float64"):
        dm.validate_table(t.astype([(n, "f8" if n == "FEH" else t.dtype[n]) for n in t.dtype.names]))
    swapped = list(t.dtype.names)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    with pytest.raises(dm.DataModelError, match="another order"):
        dm.validate_table(t[swapped])
    with pytest.raises(dm.DataModelError, match="missing: SNR"):
        dm.validate_table(t[[n for n in t.dtype.names if n != "SNR"]])


def test_columns_from_meta_and_prediction():
    meta = {
        "TARGETID": np.array([11, 12, 13]), "SURVEY": np.array(["main", "main", "lamost"]),
        "PROGRAM": np.array(["dark", "dark", "dr7"]), "HEALPIX": np.array([5, 5, 9], np.int32),
        "TARGET_RA": np.array([1.0, 2.0, 3.0]), "TARGET_DEC": np.array([-1.0, 0.0, 1.0]),
        "FIBER_KIND": np.array(["target"] * 3),
        "SOURCE": np.array(["release/healpix/main/dark/0/5/coadd-main-dark-5.fits"] * 2
                           + ["lamost/spec-1.fits.gz"]),
        "ROW": np.array([0, 7, 0], np.int32),
        "ZWARN": np.array([0.0, 4.0, np.nan]), "SPECTYPE": np.array(["STAR", "GALAXY", ""]),
    }
    cols = dm.columns_from_meta(meta)
    assert "FIBER_KIND" not in cols and "ROW" not in cols
    np.testing.assert_array_equal(cols["SOURCE_ROW"], [0, 7, 0])
    assert list(cols["SOURCE"]) == ["coadd-main-dark-5.fits"] * 2 + ["spec-1.fits.gz"]
    np.testing.assert_array_equal(cols["ZWARN"], [0, 4, -1])
    values = np.array([[-1.0, 5000.0], [0.2, 6000.0], [-2.0, 4500.0]])
    pred = dm.columns_from_prediction(values=values, errors=values / 100, ensemble_std=None,
                                      label_names=["FEH", "TEFF"])
    t = dm.to_table({**cols, **pred})
    np.testing.assert_allclose(t["TEFF"], [5000, 6000, 4500])
    np.testing.assert_allclose(t["FEH_ERR"], [-0.01, 0.002, -0.02], rtol=1e-6)
    assert np.isnan(t["LOGG"]).all() and np.isnan(t["FEH_ENS_STD"]).all()
    with pytest.raises(dm.DataModelError, match="MGFE"):
        dm.columns_from_prediction(values=values, errors=values, ensemble_std=None, label_names=["MGFE", "TEFF"])
