"""Synthetic LAMOST files: layouts, readers, truth and catalogue, determinism, errors."""

from __future__ import annotations

import os

import fitsio
import numpy as np
import pytest
from click.testing import CliRunner

from catalog_tool.cli import main
from catalog_tool.errors import ConfigError
from catalog_tool.io.lamost import detect_layout, read_lamost
from catalog_tool.io.lamost_catalog import archive_name
from catalog_tool.sim import instrument as ins
from catalog_tool.sim.lamost import CATALOG_NAME, GENERAL_CATALOG_COLUMNS, simulate_lamost


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return simulate_lamost(tmp_path_factory.mktemp("lamost") / "rel", n=12, seed=5, layout="mixed", gzip=True)


def test_every_file_reads_with_the_right_layout(release):
    truth = fitsio.read(release.truth)
    assert set(truth["LAYOUT"]) == {"dr1", "dr7", "dr10"}
    for row in truth:
        path = f"{release.out}/{row['FILE']}"
        assert path.endswith(".fits.gz")
        assert detect_layout(path) == row["LAYOUT"]
        b = read_lamost(path)
        assert b.meta["TARGETID"][0] == row["TARGETID"]
        assert b.meta["PROGRAM"][0] == row["LAYOUT"]
        wave = b.arms["LRS"].wave[0]
        npix = {"dr1": [3904], "dr7": [3901, 3902, 3903, 3904], "dr10": [3909]}[row["LAYOUT"]]
        assert wave.size in npix
        assert np.allclose(wave, ins.lamost_wave(wave.size), rtol=1e-6)
        assert b.meta["CLASS"][0] == {"star": "STAR", "galaxy": "GALAXY", "qso": "QSO"}[row["KIND"]]
        assert abs(b.meta["Z"][0] - row["Z"]) < 1e-3
        if row["LAYOUT"] == "dr1":
            assert row["OBSID"] == -1
        else:
            assert b.meta["OBSID"][0] == row["OBSID"] > 0
        # the r-band S/N in the header follows the truth S/N (set over 5500-6900 A)
        assert b.meta["SNRR"][0] == pytest.approx(row["SNR"], rel=0.15)


def test_headers_like_real_files(release, realdata):
    truth = fitsio.read(release.truth)
    for layout, real in (("dr1", "dr1-spec-55862-B6212_sp06-005.fits"),
                         ("dr7", "dr7-spec-56201-EG020224N124106V01_sp01-098.fits"),
                         ("dr10", "dr10-3703110.fits")):
        sim = fitsio.FITS(f"{release.out}/{truth['FILE'][truth['LAYOUT'] == layout][0]}")
        ref = fitsio.FITS(realdata / "lamost" / real)
        assert [h.get_extname() for h in sim] == [h.get_extname() for h in ref]
        hs, hr = sim[0].read_header(), ref[0].read_header()
        keys = ("OBSID", "DATA_V", "CLASS", "SUBCLASS", "Z", "Z_ERR", "SNRU", "SN_U", "COEFF0", "COEFF1",
                "FIBERTYP", "FIB_TYPE", "DESIG", "RA", "DEC", "LMJD", "PLANID", "SPID", "FIBERID")
        assert [k for k in keys if k in hr] == [k for k in keys if k in hs], layout
        if layout == "dr10":
            assert sim["COADD"].read().dtype.names == ref["COADD"].read().dtype.names


def test_catalog_and_truth_row_for_row(release):
    truth = fitsio.read(release.truth)
    cat = fitsio.read(f"{release.out}/{CATALOG_NAME}")
    # the LAMOST General Catalogue's names and types, every row with its obsid (DR1 files included)
    with fitsio.FITS(f"{release.out}/{CATALOG_NAME}") as f:
        assert f[1].get_colnames() == [name for name, _ in GENERAL_CATALOG_COLUMNS]
    for name, dtype in GENERAL_CATALOG_COLUMNS:
        assert cat[name].dtype.kind == ("U" if dtype[0] == "S" else np.dtype(dtype).kind), name
        assert dtype[0] == "S" or cat[name].dtype.itemsize == np.dtype(dtype).itemsize, name
    has_obsid = truth["OBSID"] > 0
    assert np.array_equal(cat["obsid"][has_obsid], truth["OBSID"][has_obsid])
    assert len(np.unique(cat["obsid"])) == len(cat) and np.all(cat["obsid"] > 0)
    names = [archive_name(lmjd=int(r["lmjd"]), planid=r["planid"], spid=int(r["spid"]), fiberid=int(r["fiberid"]))
             for r in cat]
    assert names == [os.path.basename(f).removesuffix(".gz") for f in truth["FILE"]]
    assert np.allclose(cat["ra"], truth["RA"]) and np.allclose(cat["dec"], truth["DEC"])
    assert len(np.unique(truth["TARGETID"])) == len(truth) == 12
    star = truth["KIND"] == "star"
    assert np.all(np.isfinite(truth["FEH"][star]))
    assert np.allclose(truth["Z"][star], ins.doppler_factor(rv=truth["RV"][star]) - 1)


def test_determinism(tmp_path):
    a = simulate_lamost(tmp_path / "a", n=4, seed=9, layout="dr10")
    b = simulate_lamost(tmp_path / "b", n=4, seed=9, layout="dr10")
    c = simulate_lamost(tmp_path / "c", n=4, seed=10, layout="dr10")
    fa = fitsio.read(f"{a.out}/{a.files[0]}", "COADD")["FLUX"]
    assert a.files == b.files
    assert np.array_equal(fa, fitsio.read(f"{b.out}/{b.files[0]}", "COADD")["FLUX"])
    assert not np.array_equal(fa, fitsio.read(f"{c.out}/{c.files[0]}", "COADD")["FLUX"])


def test_same_stars_in_lamost_and_desi(tmp_path):
    from catalog_tool.sim.desi import simulate_desi

    labels = {"TEFF": np.array([4700.0, 6000.0, 5300.0]), "LOGG": np.array([2.4, 4.2, 4.6]),
              "FEH": np.array([-1.5, -0.2, 0.3]), "ALPHAFE": np.array([0.35, 0.05, 0.0]),
              "RV": np.array([120.0, -30.0, 15.0])}
    lam = fitsio.read(simulate_lamost(tmp_path / "l", labels=labels, seed=1, layout="dr7").truth)
    des = fitsio.read(simulate_desi(tmp_path / "d", labels=labels, pixels=1, seed=1, resolution=False).truth)
    des = des[des["KIND"] == "star"]
    des = des[np.argsort(des["LABEL_ROW"])]
    assert np.array_equal(lam["LABEL_ROW"], [0, 1, 2]) and np.array_equal(des["LABEL_ROW"], [0, 1, 2])
    for c in ("TEFF", "LOGG", "FEH", "ALPHAFE", "RV"):
        assert np.allclose(lam[c], des[c]) and np.allclose(lam[c], labels[c])


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "--n"), ({"layout": "dr5"}, "--layout"), ({"snr_range": (0.0, 5.0)}, "positive"),
])
def test_invalid_arguments(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        simulate_lamost(tmp_path / "x", **kwargs)


def test_cli(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["simulate", "lamost", str(tmp_path / "o"), "--n", "2", "--layout", "dr1", "--seed", "4"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "o" / "spectra").rglob("spec-*.fits"))) == 2
    r = runner.invoke(main, ["simulate", "lamost", str(tmp_path / "o"), "--n", "2"])
    assert r.exit_code == 1 and "not empty" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["simulate", "lamost", str(tmp_path / "p"), "--n", "2", "--snr-max", "-3"])
    assert r.exit_code == 1 and "S/N" in r.output
