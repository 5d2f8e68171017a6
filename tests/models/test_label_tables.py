"""Label catalogues as users have them: APOGEE allStar and GALAH allstar tables, column maps, cuts,
missing values and duplicates (catalog_tool.train.labels), and how load_labelled uses them."""

from __future__ import annotations

import os

import fitsio
import numpy as np
import pytest

from catalog_tool.errors import ConfigError, InputFileError
from catalog_tool.preprocess.grid import ModelGrid
from catalog_tool.preprocess.settings import PreprocessSettings
from catalog_tool.sim.desi import simulate_desi
from catalog_tool.train.data import load_labelled
from catalog_tool.train.labels import LabelOptions, available_labels, read_labels, table_columns
from catalog_tool.train.where import WhereError

from label_table_factory import apogee_table, galah_table, stars_of, write_table


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return simulate_desi(tmp_path_factory.mktemp("desi"), pixels=1, per_pixel=60, seed=21, resolution=False,
                         checksum=False)


@pytest.fixture(scope="module")
def stars(release):
    return stars_of(fitsio.read(release.truth))


def test_apogee_table_has_the_real_names_and_dtypes(stars, tmp_path):
    path = write_table(tmp_path / "allStar.fits", apogee_table(stars, rng=np.random.default_rng(0)))
    with fitsio.FITS(path) as f:
        d = f[1].read(rows=[0])
    assert d.dtype["ASPCAPFLAG"] == np.dtype(">u8") and d.dtype["FE_H_FLAG"] == np.dtype(">i4")
    assert d.dtype["RA"] == np.dtype(">f8") and d.dtype["FE_H"] == np.dtype(">f4")
    assert d.dtype["APOGEE_ID"].kind == "U" and d.dtype["FPARAM"].shape == (9,)
    assert "ASPCAPFLAG" in table_columns(path)


def test_apogee_preset_cuts_sentinels_and_duplicates(stars, tmp_path):
    rng = np.random.default_rng(1)
    rows = apogee_table(stars, rng=rng, n_duplicates=5, n_sentinel=3, n_bad=4)
    path = write_table(tmp_path / "allStar.fits", rows)
    opts = LabelOptions(preset="apogee", where="ASPCAPFLAG & 2**23 == 0 and SNR > 0")
    t = read_labels(path, names=["FEH", "TEFF", "ALPHAFE"], options=opts)
    n = len(stars)
    r = t.report
    assert r["rows"] == n + 5 and r["pass_where"] == n + 5 - 4   # STAR_BAD rows cut, the others kept
    assert r["duplicates"] == 5 and r["kept"] == n - 4
    assert t.columns["FEH"] == "FE_H" and t.columns["ALPHAFE"] == "ALPHA_M" and t.columns["ID"] == "APOGEE_ID"
    # -9999 and NaN are missing per label: those stars keep their other labels
    assert np.isnan(t.labels["FEH"]).sum() == 3 and np.isnan(t.labels["TEFF"]).sum() == 1
    assert np.all(np.isfinite(t.labels["ALPHAFE"]))
    assert np.nanmin(t.labels["FEH"]) > -9000
    # every kept row is the high-S/N original (the duplicates carry FE_H + 0.5 at a third of the S/N)
    best = rows[rows["EXTRATARG"] == 0]
    key = {(round(float(a), 7), round(float(b), 7)): float(f) for a, b, f in zip(best["RA"], best["DEC"], best["FE_H"])}
    got = [key[(round(float(a), 7), round(float(b), 7))] for a, b in zip(t.ra, t.dec)]
    ok = np.isfinite(t.labels["FEH"])
    np.testing.assert_allclose(t.labels["FEH"][ok], np.asarray(got)[ok], rtol=0, atol=1e-6)
    np.testing.assert_allclose(t.errors["FEH"], 0.01, rtol=1e-6)


def test_duplicates_by_id_alone_and_null_ids(stars, tmp_path):
    rng = np.random.default_rng(2)
    rows = galah_table(stars, rng=rng, n_duplicates=4, n_nan=3)
    path = write_table(tmp_path / "galah.fits", rows)
    t = read_labels(path, names=["FEH", "TEFF"], options=LabelOptions(preset="galah", where="flag_sp == 0"))
    # repeats 2 arcsec away are linked by gaiadr3_source_id only; the null Gaia id links nothing
    assert t.report["duplicates"] == 4 and t.report["kept"] == len(stars) - 2
    assert t.columns["SNR"] == "SNR_PX_CCD3" and t.columns["FEH_ERR"] == "E_FE_H"
    dup_feh = set(np.round(rows["fe_h"][rows["sobject_id"] % 1000 == 501].astype(float), 5))
    assert not dup_feh & set(np.round(t.labels["FEH"][np.isfinite(t.labels["FEH"])], 5))
    assert np.isnan(t.labels["FEH"]).sum() == 3  # GALAH's NaN: missing FEH, TEFF still there
    # without the preset the same table needs explicit names; the id map alone catches the repeats
    t2 = read_labels(path, names=["FEH"], options=LabelOptions.from_cli(
        columns=["FEH=fe_h", "id=gaiadr3_source_id", "snr=snr_px_ccd3"], where="flag_sp == 0"))
    assert t2.report["duplicates"] == 4


def test_column_map_wins_over_preset_and_bad_maps_are_refused(stars, tmp_path):
    path = write_table(tmp_path / "allStar.fits", apogee_table(stars, rng=np.random.default_rng(3)))
    t = read_labels(path, names=["FEH"], options=LabelOptions.from_cli(preset="apogee", columns=["FEH=M_H"]))
    assert t.columns["FEH"] == "M_H"
    with pytest.raises(ConfigError, match=r"--label-column FEH=NOPE: no such column"):
        read_labels(path, names=["FEH"], options=LabelOptions.from_cli(columns=["FEH=NOPE"]))
    with pytest.raises(ConfigError, match="must look like LABEL=COLUMN"):
        LabelOptions.from_cli(columns=["FEH"])
    with pytest.raises(ConfigError, match="more than once"):
        LabelOptions.from_cli(columns=["FEH=FE_H", "feh=M_H"])
    with pytest.raises(ConfigError, match="no column for ALPHAFE"):  # allStar has no ALPHAFE without the preset
        read_labels(path, names=["ALPHAFE"])
    with pytest.raises(WhereError, match="unknown column SNRR"):   # checked before any row is read
        read_labels(path, names=["TEFF"], options=LabelOptions(preset="apogee", where="SNRR > 3"))
    with pytest.raises(WhereError, match="expected"):               # syntax: when the options are made
        LabelOptions(where="SNR >")
    assert available_labels(path, ["FEH", "ALPHAFE", "TEFF", "LOGG"], LabelOptions(preset="apogee")) == \
        ["FEH", "ALPHAFE", "TEFF", "LOGG"]
    assert available_labels(path, ["FEH", "ALPHAFE"]) == []


def test_table_without_any_join_column_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("FE_H,SNR\n0.1,50\n")
    with pytest.raises(ConfigError, match="no TARGETID/OBSID column and no RA/DEC"):
        read_labels(str(path), names=["FEH"], options=LabelOptions.from_cli(columns=["FEH=FE_H"]))
    with pytest.raises(InputFileError, match="not found"):
        read_labels(str(tmp_path / "none.fits"), names=["FEH"])


def test_csv_with_apogee_names(stars, tmp_path):
    path = tmp_path / "apogee.csv"
    lines = ["apogee_id,ra,dec,fe_h,teff,snr,aspcapflag"]
    for i, s in enumerate(stars[:10]):
        feh = -9999 if i == 0 else float(s["FEH"])
        lines.append(f"2M{i:04d},{float(s['TARGET_RA'])!r},{float(s['TARGET_DEC'])!r},{feh},{float(s['TEFF'])},"
                     f"{100 + i},{8388608 if i == 1 else 0}")
    path.write_text("\n".join(lines) + "\n")
    t = read_labels(str(path), names=["FEH", "TEFF"], options=LabelOptions(preset="apogee", where="ASPCAPFLAG == 0"))
    assert len(t) == 9 and np.isnan(t.labels["FEH"]).sum() == 1


def _load(release, path, options, names=("FEH", "TEFF"), cache=None):
    return load_labelled([release.out], labels_path=path, names=list(names), grid=ModelGrid(),
                         settings=PreprocessSettings(), options=options, cache=cache)


def test_load_labelled_matches_an_allstar_by_position(release, stars, tmp_path):
    rows = apogee_table(stars, rng=np.random.default_rng(4), n_duplicates=6, n_sentinel=2, n_bad=3)
    path = write_table(tmp_path / "allStar.fits", rows)
    opts = LabelOptions(preset="apogee", where="ASPCAPFLAG & 2**23 == 0")
    ls, failed = _load(release, path, opts)
    assert failed == []
    truth = {int(s["TARGETID"]): s for s in stars}
    bad = {(round(float(r["RA"]), 6), round(float(r["DEC"]), 6)) for r in rows if r["ASPCAPFLAG"] & (1 << 23)}
    kept = [t for t in ls.targetid if (round(float(truth[t]["TARGET_RA"]), 6),
                                      round(float(truth[t]["TARGET_DEC"]), 6)) not in bad]
    assert len(kept) == len(ls)                       # no STAR_BAD star reached the set
    ok = np.isfinite(ls.labels["FEH"])
    want = np.array([truth[int(t)]["FEH"] for t in ls.targetid])
    np.testing.assert_allclose(ls.labels["FEH"][ok], want[ok], atol=1e-6)  # never the duplicate's +0.5
    assert ls.errors["FEH"].shape == (len(ls),)
    assert "6 duplicate(s) dropped" in ls.summary() and f"{len(ls)} spectra matched" in ls.summary()


def test_cache_key_follows_the_table_reading(release, stars, tmp_path):
    path = write_table(tmp_path / "allStar.fits", apogee_table(stars, rng=np.random.default_rng(5)))
    cache = str(tmp_path / "set.npz")
    a, _ = _load(release, path, LabelOptions(preset="apogee", where="SNR > 100"), cache=cache)
    b, _ = _load(release, path, LabelOptions(preset="apogee", where="SNR > 100"), cache=cache)  # from the cache
    np.testing.assert_array_equal(a.targetid, b.targetid)
    assert b.table_report == a.table_report and set(b.errors) == set(a.errors)
    for other in (LabelOptions(preset="apogee", where="SNR > 150"), LabelOptions(preset="apogee"),
                  LabelOptions.from_cli(preset="apogee", columns=["FEH=M_H"])):
        with pytest.raises(ConfigError, match="made from other inputs"):
            _load(release, path, other, cache=cache)
    assert os.path.exists(cache)
