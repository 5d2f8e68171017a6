"""Writing one VAC: content, order, PRIMARY, headers, checksums, atomicity."""

from __future__ import annotations

import os
import warnings

import fitsio
import numpy as np
import pytest
from astropy.io import fits as afits
from astropy.table import Table

from catalog_tool.vac import datamodel as dm
from catalog_tool.vac import flags as fl
from catalog_tool.vac import write as w
from vac_factory import assert_tables_equal, expected_order, make_columns, provenance


@pytest.fixture
def cols(rng):
    return make_columns(40, rng, targetid_pool=15)


@pytest.fixture
def vac(tmp_path, cols):
    extra = np.zeros(40, dtype=[("ROWNUM", "i4"), ("CHI2", "f4")])
    extra["ROWNUM"] = np.arange(40)
    extra["CHI2"] = np.linspace(1, 2, 40)
    path = tmp_path / "vac.fits"
    w.write_vac(path, cols, provenance=provenance(), extras={"FIT": extra},
                errors=[("release/bad.fits", "truncated: HDU 3 (FLUX) needs 1000 bytes"),
                        ("release/x.fits", "not a FITS\nfile")])
    return path


def test_rows_ordered_by_healpix_then_input(vac, cols):
    got = w.read_vac(vac)
    want = dm.to_table(cols)[expected_order(cols["HEALPIX"])]
    assert_tables_equal(got, want, skip=("PRIMARY", "FLAG_BAD"))
    assert np.all(np.diff(got["HEALPIX"]) >= 0)
    np.testing.assert_array_equal(got["FLAG_BAD"], (want["FLAGS"] & fl.BAD_MASK) != 0)
    # extras follow the same permutation
    fit = fitsio.read(vac, ext="FIT")
    np.testing.assert_array_equal(fit["ROWNUM"], expected_order(cols["HEALPIX"]))
    assert fitsio.read_header(vac, ext="FIT")["ROWMATCH"] is True


def test_primary_one_per_target_best_snr(vac):
    got = w.read_vac(vac)
    lamost = np.char.strip(got["SURVEY"]) == b"lamost"
    for is_lamost in (False, True):
        sub = got[lamost == is_lamost]
        for tid in np.unique(sub["TARGETID"]):
            rows = sub[sub["TARGETID"] == tid]
            assert rows["PRIMARY"].sum() == 1
            snr = np.where(np.isfinite(rows["SNR"]), rows["SNR"], -np.inf)
            assert rows["PRIMARY"][np.argmax(snr)]
    # the fixture has duplicates, or this test would prove nothing
    assert len(np.unique(got["TARGETID"])) < len(got)


def test_primary_mask_cases():
    tid = np.array([7, 7, 7, 8, 8, 9, 7, 7])
    survey = np.array(["main", "sv3", "sv1", "main", "main", "main", "lamost", "lamost"])
    snr = np.array([10.0, 30.0, np.nan, np.nan, np.nan, 1.0, 5.0, 6.0])
    np.testing.assert_array_equal(
        w.primary_mask(targetid=tid, survey=survey, snr=snr),
        # 7: best S/N 30 (sv3); 8: no S/N: first row; 9 alone; LAMOST 7s are their own group
        [False, True, False, True, False, True, False, True])


def test_primary_id_spaces_come_from_the_reader_registry(monkeypatch):
    """A survey whose ids are not DESI TARGETIDs says so in its Reader; nothing in the VAC code."""
    import dataclasses

    from catalog_tool.io import readers

    toy = dataclasses.replace(readers.reader("lamost"), kind="toy", own_id_surveys=("toysurv",))
    tid = np.array([7, 7, 7, 7])
    survey = np.array([b"main", b"toysurv ", b"lamost", b"toysurv"])
    snr = np.array([1.0, 2.0, 3.0, 4.0])
    # unregistered: toysurv rows share the DESI id space, so the best of all four DESI-space rows wins
    np.testing.assert_array_equal(readers.id_space(survey), [0, 0, 2, 0])
    np.testing.assert_array_equal(w.primary_mask(targetid=tid, survey=survey, snr=snr),
                                  [False, False, True, True])
    monkeypatch.setattr(readers, "READERS", readers.READERS + (toy,))
    np.testing.assert_array_equal(readers.id_space(survey), [0, 3, 2, 3])
    np.testing.assert_array_equal(readers.id_space(survey.astype(str)), [0, 3, 2, 3])
    np.testing.assert_array_equal(w.primary_mask(targetid=tid, survey=survey, snr=snr),
                                  [True, False, True, True])
    # ties go to the first row in the given order
    np.testing.assert_array_equal(
        w.primary_mask(targetid=[5, 5], survey=np.array([b"sv3", b"main"]), snr=[3.0, 3.0]), [True, False])


def test_headers_carry_provenance_flags_and_column_cards(vac):
    prov = provenance()
    for ext in (0, dm.EXTNAME):
        h = fitsio.read_header(vac, ext=ext)
        assert h["MODEL"] == prov.model_name and h["MODELSHA"] == prov.model_sha256
        assert h["COMMAND"] == prov.command and len(prov.command) > 68  # long string survived
        assert h["INPUT"] == "release/" and h["DATE"] == "2026-02-15T12:00:00"
        assert h["STXCVER"] and h["VACDMVER"] == dm.DATAMODEL_VERSION
        assert h["FLAGB0"] == "NOT_STAR" and h["FLAGB10"] == "READ_FAILED"
        assert h["BADMASK"] == fl.BAD_MASK
        assert w.Provenance.from_header(h) == prov
    h = fitsio.read_header(vac, ext=dm.EXTNAME)
    for i, c in enumerate(dm.COLUMNS, start=1):
        assert h[f"TTYPE{i}"] == c.name
        assert h[f"TUNIT{i}"] == c.unit
        assert h[f"TCOMM{i}"] == c.description
        assert h[f"TUCD{i}"] == c.ucd
        assert (f"TNULL{i}" in h) == (c.null is not None)
    assert h["TFORM1"] == "K"  # int64 ids


def test_errors_table(vac):
    assert w.read_errors(vac) == [("release/bad.fits", "truncated: HDU 3 (FLUX) needs 1000 bytes"),
                                  ("release/x.fits", "not a FITS file")]
    with fitsio.FITS(vac) as f:
        assert [hdu.get_extname() for hdu in f] == ["", dm.EXTNAME, dm.ERRORS_EXTNAME, "FIT"]


def test_astropy_reads_units_nulls_and_checksums(vac):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bad checksum or unit is a warning in astropy
        with afits.open(vac, checksum=True) as hdul:
            for hdu in hdul:
                assert hdu.verify_checksum() == 1 and hdu.verify_datasum() == 1
        t = Table.read(vac, hdu=dm.EXTNAME)
    assert str(t["TEFF"].unit) == "K" and str(t["TARGET_RA"].unit) == "deg"
    assert t["FEH"].unit is None
    lamost = np.char.strip(np.asarray(t["SURVEY"]).astype(str)) == "lamost"
    assert lamost.any() and (~lamost).any()
    # TNULL -1 becomes a masked entry
    assert np.all(t["ZWARN"].mask == lamost)
    assert t["TARGETID"].dtype.kind == "i" and t["TARGETID"].dtype.itemsize == 8


def test_checksum_detects_corruption(vac, tmp_path):
    data = bytearray(vac.read_bytes())
    with fitsio.FITS(vac) as f:
        start = f[dm.EXTNAME].get_offsets()["data_start"]
    data[start + 100] ^= 0xFF
    bad = tmp_path / "corrupt.fits"
    bad.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with afits.open(bad, checksum=True) as hdul:
            hdul[1].data  # noqa: B018 - load the data so the datasum is checked
    assert any("Checksum verification failed" in str(x.message) or "Datasum" in str(x.message)
               for x in caught)


def test_refuses_to_overwrite_unless_asked(vac, cols):
    before = vac.read_bytes()
    with pytest.raises(w.OutputExistsError, match="exists"):
        w.write_vac(vac, cols, provenance=provenance())
    assert vac.read_bytes() == before
    w.write_vac(vac, {k: v[:3] for k, v in cols.items()}, provenance=provenance(), overwrite=True)
    assert len(w.read_vac(vac)) == 3


def test_failed_write_leaves_no_temp_and_keeps_old_file(vac, cols, monkeypatch):
    before = vac.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(w, "_write_errors", boom)  # fails after the table was written
    with pytest.raises(RuntimeError, match="disk full"):
        w.write_vac(vac, cols, provenance=provenance(), errors=[], overwrite=True)
    assert vac.read_bytes() == before
    assert sorted(os.listdir(vac.parent)) == ["vac.fits"]
    new = vac.parent / "new.fits"
    with pytest.raises(RuntimeError):
        w.write_vac(new, cols, provenance=provenance(), errors=[])
    assert sorted(os.listdir(vac.parent)) == ["vac.fits"]


def test_bad_input_is_refused_before_writing(tmp_path, cols):
    with pytest.raises(dm.DataModelError, match="NOPE"):
        w.write_vac(tmp_path / "v.fits", {**cols, "NOPE": cols["FEH"]}, provenance=provenance())
    with pytest.raises(dm.DataModelError, match="extra HDU X"):
        w.write_vac(tmp_path / "v.fits", cols, provenance=provenance(),
                    extras={"X": np.zeros(3, dtype=[("A", "f4")])})
    assert os.listdir(tmp_path) == []


def test_empty_table_and_default_date(tmp_path):
    path = w.write_vac(tmp_path / "empty.fits", dm.empty_table(0), provenance=provenance(date=None),
                       errors=[])
    assert len(w.read_vac(path)) == 0 and len(w.read_vac(path, columns=["FEH"])) == 0
    h = fitsio.read_header(path, ext=0)
    assert len(h["DATE"]) == 19 and h["DATE"][4] == "-"
    assert w.read_errors(path) == []
