"""Synthetic DESI releases: determinism, readers (ours and desispec), truth, pixels, errors."""

from __future__ import annotations

import hashlib
import logging

import fitsio
import healpy as hp
import numpy as np
import pytest
from click.testing import CliRunner

from catalog_tool.cli import main
from catalog_tool.errors import ConfigError
from catalog_tool.io.desi import read_coadd
from catalog_tool.sim import instrument as ins
from catalog_tool.sim.desi import BITS, simulate_desi


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("desi") / "rel"
    res = simulate_desi(out, pixels=2, per_pixel=24, seed=11, resolution=True)
    return res


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_layout_and_determinism(release, tmp_path):
    assert len(release.files) == 4
    again = simulate_desi(tmp_path / "again", pixels=2, per_pixel=24, seed=11)
    assert again.files == release.files
    for rel in release.files:
        a = fitsio.read(f"{release.out}/{rel}", "FIBERMAP" if "coadd" in rel else "REDSHIFTS")
        b = fitsio.read(f"{again.out}/{rel}", "FIBERMAP" if "coadd" in rel else "REDSHIFTS")
        assert np.array_equal(a, b)
    # Byte-identical files: checksums carry no date, nothing depends on the run's time.
    for rel in release.files:
        assert _digest(f"{release.out}/{rel}") == _digest(f"{again.out}/{rel}"), rel
    assert _digest(release.truth) == _digest(again.truth)
    f1 = fitsio.read(f"{release.out}/{release.files[0]}", "R_FLUX")
    f2 = fitsio.read(f"{again.out}/{release.files[0]}", "R_FLUX")
    assert np.array_equal(f1, f2)
    other = simulate_desi(tmp_path / "other", pixels=2, per_pixel=24, seed=12)
    assert other.files != release.files or not np.array_equal(
        fitsio.read(f"{other.out}/{other.files[0]}", "R_FLUX"), f1)


def test_workers_do_not_change_the_output(release, tmp_path):
    par = simulate_desi(tmp_path / "par", pixels=2, per_pixel=24, seed=11, workers=2)
    assert par.files == release.files
    for rel in release.files:
        assert _digest(f"{release.out}/{rel}") == _digest(f"{par.out}/{rel}"), rel
    assert _digest(release.truth) == _digest(par.truth)


def test_output_does_not_depend_on_the_blas_thread_count(release, tmp_path):
    """The simulation is a function of its seed: whatever numpy's OpenBLAS thread count is when it
    is called (an earlier annotate run in the same process once left it at one thread for good,
    and spawned workers then wrote other bytes than this process)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    before = [i["num_threads"] for i in threadpool_info()]
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            again = simulate_desi(tmp_path / f"t{threads}", pixels=2, per_pixel=24, seed=11)
        for rel in release.files:
            assert _digest(f"{release.out}/{rel}") == _digest(f"{again.out}/{rel}"), (threads, rel)
    assert [i["num_threads"] for i in threadpool_info()] == before  # and nothing left changed


def test_headers_and_hdus_like_real_files(release, realdata):
    path = f"{release.out}/{release.files[0]}"
    real = fitsio.FITS(realdata / "desi" / "coadd-special-dark-27247.fits")
    sim = fitsio.FITS(path)
    assert [h.get_extname() for h in sim] == [h.get_extname() for h in real]
    for ext in ("FIBERMAP", "EXP_FIBERMAP", "SCORES"):
        assert sim[ext].read(rows=[0]).dtype == real[ext].read(rows=[0]).dtype, ext
    hdr = sim[0].read_header()
    pixel = int(path.split("-")[-1].split(".")[0])
    assert (hdr["HPXPIXEL"], hdr["HPXNSIDE"], hdr["HPXNEST"], hdr["SPGRP"], hdr["SPGRPVAL"]) == (pixel, 64, True, "healpix", pixel)
    assert (hdr["SURVEY"], hdr["PROGRAM"]) == ("main", "bright")
    assert sim["B_FLUX"].read_header()["BUNIT"] == real["B_FLUX"].read_header()["BUNIT"]
    assert sim["Z_IVAR"].read_header()["BUNIT"] == real["Z_IVAR"].read_header()["BUNIT"]
    assert sim["B_RESOLUTION"].get_dims()[1:] == [11, 2751]
    assert np.array_equal(sim["R_WAVELENGTH"].read(), real["R_WAVELENGTH"].read())
    assert sim["FIBERMAP"].read_header()["TUNIT3"] == "deg"
    assert "CHECKSUM" in sim["B_FLUX"].read_header()
    for rel in release.files:
        for hdu in fitsio.FITS(f"{release.out}/{rel}"):
            hdu.verify_checksum()  # raises on a wrong CHECKSUM or DATASUM


def test_resolution_rows(release):
    truth = fitsio.read(release.truth)
    rel = release.files[0]
    una = truth["KIND"][truth["FILE"] == rel] == "unassigned"
    assert una.any() and not una.all()
    for arm in "BRZ":
        res = fitsio.read(f"{release.out}/{rel}", f"{arm}_RESOLUTION")
        assert np.all(res[una] == 0)
        assert np.all(res[~una] == res[~una][0])
        assert np.allclose(res[~una][0].sum(axis=0), 1.0, atol=1e-6)


def test_truth_matches_files_row_for_row(release):
    truth = fitsio.read(release.truth)
    for rel in release.files[::2]:
        batch = read_coadd(f"{release.out}/{rel}")
        rows = truth[truth["FILE"] == rel]
        assert len(rows) == len(batch) == 24
        assert np.array_equal(rows["TARGETID"], batch.meta["TARGETID"])
        assert np.array_equal(rows["ROW"], np.arange(24))
        kind = rows["KIND"]
        assert set(kind) == {"star", "galaxy", "qso", "sky", "unassigned"}
        # unassigned fibres: negative TARGETID and all-zero data, as in real coadds
        una = kind == "unassigned"
        assert np.all(batch.meta["TARGETID"][una] < 0)
        for arm in batch.arms.values():
            assert np.all(arm.flux[una] == 0) and np.all(arm.ivar[una] == 0)
        assert np.all(batch.meta["OBJTYPE"][kind == "sky"] == "SKY")
        star = kind == "star"
        assert np.all(batch.meta["DESI_TARGET"][star] & BITS["MWS_ANY"])
        assert np.all(batch.meta["MWS_TARGET"][star] != 0)
        assert np.all(batch.meta["MWS_TARGET"][~star] == 0)
        assert np.all(batch.meta["SPECTYPE"][star] == "STAR")
        assert np.all(batch.meta["ZWARN"][una] & BITS["ZW_NODATA"])
        # redrock Z of stars is RV / c within a few ZERR
        dz = batch.meta["Z"][star] - rows["Z"][star]
        assert np.all(np.abs(dz) < 6 * batch.meta["ZERR"][star])
        assert np.allclose(rows["Z"][star], ins.doppler_factor(rv=rows["RV"][star]) - 1)
        # the median S/N in 6000-7500 A is the truth SNR (noise realised around it)
        r = batch.arms["R"]
        ref = (r.wave > 6000) & (r.wave < 7500)
        good = star & (batch.meta["COADD_FIBERSTATUS"] & BITS["BADAMPR"] == 0)
        med = np.median((r.flux * np.sqrt(r.ivar))[good][:, ref], axis=1)
        assert np.allclose(med, rows["SNR"][good], rtol=0.12)
        assert np.all(np.isfinite(rows["TEFF"][star])) and np.all(np.isnan(rows["TEFF"][~star]))


def test_coordinates_inside_their_pixel(release):
    truth = fitsio.read(release.truth)
    pix = hp.ang2pix(64, truth["TARGET_RA"], truth["TARGET_DEC"], nest=True, lonlat=True)
    assert np.array_equal(pix, truth["HEALPIX"])
    for rel in release.files[::2]:
        assert str(truth["HEALPIX"][truth["FILE"] == rel][0]) in rel


def test_desispec_reads_what_we_read(release, caplog):
    from desispec.io import read_spectra

    caplog.set_level(logging.WARNING)
    path = f"{release.out}/{release.files[0]}"
    spec = read_spectra(path, return_redshifts=True)
    ours = read_coadd(path, resolution=True)
    assert spec.bands == ["b", "r", "z"]
    assert np.array_equal(np.asarray(spec.fibermap["TARGETID"]), ours.meta["TARGETID"])
    for arm in "BRZ":
        a = ours.arms[arm]
        assert np.array_equal(spec.wave[arm.lower()], a.wave)
        assert np.allclose(spec.flux[arm.lower()], a.flux)
        assert np.allclose(spec.ivar[arm.lower()], a.ivar)
        assert np.array_equal(spec.mask[arm.lower()], a.mask)
        assert np.allclose(spec.resolution_data[arm.lower()], a.resolution)
    assert np.allclose(np.asarray(spec.redshifts["Z"]), ours.meta["Z"])
    assert spec.meta["HPXPIXEL"] == ours.meta["HEALPIX"][0]
    # the desispec Resolution object is a valid, column-normalised operator
    R = spec.R["r"][3].toarray() if hasattr(spec, "R") and spec.R is not None else None
    if R is not None:
        assert np.allclose(R.sum(axis=0)[20:-20], 1.0, atol=1e-5)


def test_mess_is_present(release):
    truth = fitsio.read(release.truth)
    assert np.any(truth["COADD_FIBERSTATUS"][truth["KIND"] != "unassigned"] != 0)
    masks = [fitsio.read(f"{release.out}/{rel}", "B_MASK") for rel in release.files[::2]]
    assert all(np.any(m & BITS["COSMIC"]) for m in masks)


def test_same_stars_through_given_labels(tmp_path):
    labels = {"TEFF": np.array([4500.0, 5200, 6100, 5800, 4900]), "LOGG": np.array([2.5, 4.5, 4.1, 3.9, 4.6]),
              "FEH": np.array([-1.2, 0.1, -0.4, -0.8, 0.2]), "ALPHAFE": np.array([0.3, 0.0, 0.1, 0.25, 0.0]),
              "RV": np.array([-150.0, 10, 40, 220, -5])}
    res = simulate_desi(tmp_path / "lab", pixels=2, labels=labels, seed=3, resolution=False)
    truth = fitsio.read(res.truth)
    star = truth["KIND"] == "star"
    assert star.sum() == 5
    order = np.argsort(truth["LABEL_ROW"][star])
    assert np.array_equal(truth["LABEL_ROW"][star][order], np.arange(5))
    for c in ("TEFF", "FEH", "RV"):
        assert np.allclose(truth[c][star][order], labels[c])
    assert not fitsio.FITS(f"{res.out}/{res.files[0]}").__contains__("B_RESOLUTION")


@pytest.mark.parametrize("kwargs, message", [
    ({"pixels": 0}, "--pixels"),
    ({"per_pixel": 0}, "--per-pixel"),
    ({"snr_range": (-1.0, 10.0)}, "positive"),
    ({"snr_range": (20.0, 10.0)}, "exceeds"),
    ({"workers": 0}, "--workers"),
])
def test_invalid_arguments(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        simulate_desi(tmp_path / "x", **kwargs)


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["simulate", "desi", str(tmp_path / "a"), "--pixels", "0"])
    assert r.exit_code == 1 and "Traceback" not in r.output and "--pixels must be at least 1" in r.output
    r = runner.invoke(main, ["simulate", "desi", str(tmp_path / "a"), "--pixels", "1", "--snr-min", "-2"])
    assert r.exit_code == 1 and "S/N range must be positive" in r.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    r = runner.invoke(main, ["simulate", "desi", str(tmp_path / "full"), "--pixels", "1", "--per-pixel", "12"])
    assert r.exit_code == 1 and "not empty" in r.output and len(r.output.strip().splitlines()) == 1
    r = runner.invoke(main, ["simulate", "desi", str(tmp_path / "full"), "--pixels", "1", "--per-pixel", "12",
                             "--no-resolution", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "full" / "keep.txt").exists() and (tmp_path / "full" / "truth-desi.fits").exists()
