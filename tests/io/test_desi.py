"""DESI coadd reader against the real files in ../shared/realdata/desi, cross-checked with astropy."""

from __future__ import annotations

import builtins
import os
import shutil

import fitsio
import numpy as np
import pytest
from astropy.io import fits as afits

from catalog_tool.errors import (
    EmptyFileError,
    FileAccessError,
    InputFileError,
    MissingHDUError,
    NotFitsError,
    TruncatedFileError,
    UnknownLayoutError,
)
from catalog_tool.io import desi
from catalog_tool.io.fitsutil import BLOCK

EDR = "coadd-sv3-dark-26065.fits"  # healpix, uint32 masks with BZERO, 2 unassigned + 1 sky fibre
DR1_TILE = "coadd-4-80613-thru20210324.fits"  # tile-based, int32 masks, with redrock
SPECIAL = "coadd-special-dark-27247.fits"  # healpix, later reprocessing, with redrock
COADDS = (EDR, DR1_TILE, SPECIAL)

#: (first, last) wavelength of each arm's grid, vacuum Angstrom, 0.8 A steps.
ARM_RANGES = {"B": (3600.0, 5800.0), "R": (5760.0, 7620.0), "Z": (7520.0, 9824.0)}


@pytest.fixture
def desidir(realdata):
    return realdata / "desi"


def test_every_real_coadd_is_covered(desidir):
    found = sorted(p.name for p in desidir.glob("coadd-*.fits*"))
    assert found == sorted(COADDS)


@pytest.mark.parametrize("name", COADDS)
def test_read_matches_astropy(desidir, name):
    path = desidir / name
    batch = desi.read_coadd(path)
    with afits.open(path) as hdul:
        fm = hdul["FIBERMAP"].data
        n = len(fm)
        assert len(batch) == n
        np.testing.assert_array_equal(batch.meta["TARGETID"], fm["TARGETID"])
        np.testing.assert_array_equal(batch.meta["TARGET_RA"], fm["TARGET_RA"])
        np.testing.assert_array_equal(batch.meta["TARGET_DEC"], fm["TARGET_DEC"])
        np.testing.assert_array_equal(batch.meta["COADD_FIBERSTATUS"], fm["COADD_FIBERSTATUS"])
        np.testing.assert_array_equal(batch.meta["ROW"], np.arange(n))
        assert list(batch.arms) == ["B", "R", "Z"]
        for arm_name, arm in batch.arms.items():
            wave = hdul[f"{arm_name}_WAVELENGTH"].data
            assert arm.wave.dtype == np.float64 and arm.wave.shape == wave.shape
            np.testing.assert_array_equal(arm.wave, wave)
            lo, hi = ARM_RANGES[arm_name]
            assert arm.wave[0] == pytest.approx(lo) and arm.wave[-1] == pytest.approx(hi)
            np.testing.assert_allclose(np.diff(arm.wave), 0.8, atol=1e-9)
            assert arm.flux.shape == arm.ivar.shape == arm.mask.shape == (n, wave.size)
            assert arm.flux.dtype == np.float32 and arm.ivar.dtype == np.float32
            assert arm.mask.dtype == np.uint32
            np.testing.assert_array_equal(arm.flux, hdul[f"{arm_name}_FLUX"].data)
            np.testing.assert_array_equal(arm.ivar, hdul[f"{arm_name}_IVAR"].data)
            amask = hdul[f"{arm_name}_MASK"].data
            # astropy applies BZERO (EDR -> uint32) and leaves DR1's int32 as is: same bits.
            np.testing.assert_array_equal(arm.mask, amask.astype(amask.dtype.newbyteorder("=")).view(np.uint32)
                                          if amask.dtype.kind == "i" else amask)
            assert arm.resolution is None


def test_mask_storage_differs_between_releases(desidir):
    """EDR stores MASK as uint32 via BZERO, DR1 as int32; both come back uint32."""
    with afits.open(desidir / EDR) as hdul:
        assert hdul["R_MASK"].header["BITPIX"] == 32 and hdul["R_MASK"].header["BZERO"] == 2**31
        edr_mask = hdul["R_MASK"].data.copy()
    with afits.open(desidir / DR1_TILE) as hdul:
        assert "BZERO" not in hdul["R_MASK"].header and hdul["R_MASK"].data.dtype.kind == "i"
    batch = desi.read_coadd(desidir / EDR, arms=["R"], redrock=None)
    assert batch.arms["R"].mask.dtype == np.uint32
    assert (batch.arms["R"].mask != 0).sum() == (edr_mask != 0).sum() > 0  # real bad pixels
    np.testing.assert_array_equal(batch.arms["R"].mask, edr_mask)


def test_int32_mask_keeps_bit_31():
    stored = np.array([[0, 1, -2147483648, -1]], dtype=">i4")
    out = desi._as_uint32_mask(stored)
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(out, [[0, 1, 2**31, 2**32 - 1]])


def test_unassigned_and_sky_fibres(desidir):
    batch = desi.read_coadd(desidir / EDR, redrock=None)
    kind = batch.meta["FIBER_KIND"]
    assert list(kind) == ["unassigned", "unassigned", "target", "sky", "target"]
    assert (batch.meta["TARGETID"][kind == "unassigned"] < 0).all()
    assert list(batch.meta["OBJTYPE"]) == ["", "", "TGT", "SKY", "TGT"]
    for arm in batch.arms.values():
        empty = kind == "unassigned"
        assert not arm.flux[empty].any() and not arm.ivar[empty].any()
        assert (arm.ivar[kind == "target"] > 0).mean() > 0.99
    # unassigned fibres still point at the sky: they get a pixel, the file's own
    assert (batch.meta["HEALPIX"] == 26065).all()


@pytest.mark.parametrize("name, survey, program, pixel", [
    (EDR, "sv3", "dark", 26065),
    (SPECIAL, "special", "dark", 27247),  # FIBERMAP header says PROGRAM tertiary38: primary wins
    (DR1_TILE, "sv1", "unknown", 7108),  # no keywords: survey from the SV1_ column prefix
])
def test_survey_program_healpix(desidir, name, survey, program, pixel):
    batch = desi.read_coadd(desidir / name)
    assert set(batch.meta["SURVEY"]) == {survey} and set(batch.meta["PROGRAM"]) == {program}
    assert set(batch.meta["HEALPIX"][batch.meta["FIBER_KIND"] != "unassigned"]) == {pixel}
    assert batch.meta["HEALPIX"].dtype == np.int32
    entry = desi.scan_coadd(desidir / name)
    assert (entry.survey, entry.program, entry.healpix) == (survey, program, pixel)
    assert entry.nspec == len(batch) and entry.kind == "desi"
    assert entry.layout == ("tile" if name == DR1_TILE else "healpix")
    assert entry.nbytes == os.path.getsize(desidir / name)


def test_sv_target_bits_normalised(desidir):
    batch = desi.read_coadd(desidir / EDR, redrock=None)
    with afits.open(desidir / EDR) as hdul:
        fm = hdul["FIBERMAP"].data
        np.testing.assert_array_equal(batch.meta["SV3_DESI_TARGET"], fm["SV3_DESI_TARGET"])
        np.testing.assert_array_equal(batch.meta["DESI_TARGET"], fm["SV3_DESI_TARGET"])
        np.testing.assert_array_equal(batch.meta["MWS_TARGET"], fm["SV3_MWS_TARGET"])
    assert list(batch.meta["DESI_TARGET"]) == [0, 0, 2162697, 0, 2162697]
    assert not batch.meta["SV1_DESI_TARGET"].any()  # absent column -> zeros
    main = desi.read_coadd(desidir / SPECIAL)
    assert list(main.meta["DESI_TARGET"]) == [4611686018427387904]


@pytest.mark.parametrize("name", [DR1_TILE, SPECIAL])
def test_redrock_join(desidir, name):
    batch = desi.read_coadd(desidir / name)
    assert batch.problems == []
    with afits.open(desidir / name.replace("coadd-", "redrock-")) as hdul:
        rr = hdul["REDSHIFTS"].data
        for col in ("Z", "ZERR", "ZWARN", "DELTACHI2"):
            np.testing.assert_array_equal(batch.meta[col], rr[col])
    assert list(batch.meta["SPECTYPE"]) == ["GALAXY"]
    assert list(batch.meta["SUBTYPE"]) == [""]
    assert batch.meta["REDROCK_FOUND"].tolist() == [True]


def test_missing_redrock_is_reported_not_fatal(desidir):
    batch = desi.read_coadd(desidir / EDR)
    assert not batch.meta["REDROCK_FOUND"].any()
    assert np.isnan(batch.meta["Z"]).all() and np.isnan(batch.meta["DELTACHI2"]).all()
    assert (batch.meta["ZWARN"] == -1).all() and set(batch.meta["SPECTYPE"]) == {""}
    assert len(batch.problems) == 1 and "no redrock file" in batch.problems[0]
    assert desi.read_coadd(desidir / EDR, redrock=None).problems == []
    with pytest.raises(FileAccessError, match="redrock"):
        desi.read_coadd(desidir / EDR, redrock=desidir / "redrock-nope.fits")


def test_redrock_joined_by_targetid_not_row(desidir, tmp_path):
    coadd = tmp_path / EDR
    os.symlink(desidir / EDR, coadd)
    ids = fitsio.read(desidir / EDR, ext="FIBERMAP", columns=["TARGETID"])["TARGETID"]
    # reversed order, one target left out, asymmetric values
    keep = ids[::-1][:-1]
    table = np.zeros(len(keep), dtype=[("TARGETID", "i8"), ("Z", "f8"), ("ZERR", "f8"), ("ZWARN", "i8"),
                                       ("SPECTYPE", "U6"), ("SUBTYPE", "U20"), ("DELTACHI2", "f8")])
    table["TARGETID"] = keep
    table["Z"] = np.arange(len(keep)) * 0.1 + 0.05
    table["SPECTYPE"] = ["STAR", "QSO", "GALAXY", "STAR"]
    fitsio.write(tmp_path / ("redrock-" + EDR[len("coadd-"):]), table, extname="REDSHIFTS")
    batch = desi.read_coadd(coadd)
    lookup = dict(zip(keep.tolist(), table["Z"].tolist()))
    expected = np.array([lookup.get(t, np.nan) for t in ids.tolist()])
    np.testing.assert_array_equal(batch.meta["Z"], expected)
    assert np.isnan(batch.meta["Z"][0]) and batch.meta["ZWARN"][0] == -1
    assert list(batch.meta["SPECTYPE"]) == ["", "STAR", "GALAXY", "QSO", "STAR"]
    assert any("1 of 5 targets have no redrock row" in p for p in batch.problems)


def test_find_redrock(desidir, tmp_path):
    assert desi.find_redrock(desidir / DR1_TILE) == str(desidir / "redrock-4-80613-thru20210324.fits")
    assert desi.find_redrock(desidir / EDR) is None
    (tmp_path / "coadd-main-dark-1.fits").touch()
    (tmp_path / "zbest-main-dark-1.fits").touch()
    assert desi.find_redrock(tmp_path / "coadd-main-dark-1.fits") == str(tmp_path / "zbest-main-dark-1.fits")


@pytest.mark.parametrize("rows", [[4, 0, 2], [0, 4], [0, 1, 3], [2, 2], slice(1, 4),
                                  np.array([True, False, False, True, True])])
def test_row_subsets_equal_full_read_rows(desidir, rows):
    full = desi.read_coadd(desidir / EDR, redrock=None, resolution=True)
    part = desi.read_coadd(desidir / EDR, rows=rows, redrock=None, resolution=True)
    index = np.arange(5)[rows]
    np.testing.assert_array_equal(part.meta["ROW"], index)
    for col in full.meta:
        np.testing.assert_array_equal(part.meta[col], full.meta[col][index])
    for name in "BRZ":
        for attr in ("flux", "ivar", "mask", "resolution"):
            np.testing.assert_array_equal(getattr(part.arms[name], attr), getattr(full.arms[name], attr)[index])


def test_resolution_matches_astropy(desidir):
    batch = desi.read_coadd(desidir / EDR, arms=["z"], rows=[3, 2], resolution=True, redrock=None)
    with afits.open(desidir / EDR) as hdul:
        np.testing.assert_array_equal(batch.arms["Z"].resolution, hdul["Z_RESOLUTION"].data[[3, 2]])
    assert batch.arms["Z"].resolution.shape == (2, 11, 2881)


def test_row_subset_does_not_read_whole_images(desidir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("whole image read")

    monkeypatch.setattr(fitsio.hdu.ImageHDU, "read", refuse)
    monkeypatch.setattr(fitsio.hdu.ImageHDU, "read_image", refuse, raising=False)
    with pytest.raises(AssertionError):  # the guard works: a full read goes through read()
        desi.read_coadd(desidir / EDR, arms=["B"], redrock=None)
    # wavelength (1-D, small) is read whole; spectra images must be sliced
    monkeypatch.undo()
    calls = []
    orig = fitsio.hdu.ImageHDU.read

    def spy(self, *args, **kwargs):
        calls.append(self.get_extname())
        return orig(self, *args, **kwargs)

    monkeypatch.setattr(fitsio.hdu.ImageHDU, "read", spy)
    desi.read_coadd(desidir / EDR, rows=[1, 4], redrock=None)
    assert sorted(calls) == ["B_WAVELENGTH", "R_WAVELENGTH", "Z_WAVELENGTH"]


def test_targetids_select_rows(desidir):
    wanted = [39627866878514741, 616088619186127404, 12345]
    batch = desi.read_coadd(desidir / EDR, targetids=wanted, redrock=None)
    np.testing.assert_array_equal(batch.meta["ROW"], [3, 4])  # file order
    np.testing.assert_array_equal(batch.meta["TARGETID"], [616088619186127404, 39627866878514741])
    assert any("1 of 3 requested TARGETIDs" in p for p in batch.problems)
    with pytest.raises(ValueError):
        desi.read_coadd(desidir / EDR, rows=[0], targetids=wanted)


def test_arms_subset_and_bad_arm(desidir):
    batch = desi.read_coadd(desidir / SPECIAL, arms=("z", "B"))
    assert list(batch.arms) == ["B", "Z"]
    meta_only = desi.read_coadd(desidir / SPECIAL, arms=())
    assert meta_only.arms == {} and len(meta_only) == 1
    with pytest.raises(ValueError, match="unknown DESI arm"):
        desi.read_coadd(desidir / SPECIAL, arms=("B", "X"))


# ---------------------------------------------------------------------------------------------
# damaged files
# ---------------------------------------------------------------------------------------------
def _cut(src, dst, nbytes):
    dst.write_bytes(src.read_bytes()[:nbytes])
    return dst


@pytest.mark.parametrize("where", ["mid_header", "mid_data", "last_block"])
def test_truncated_file(desidir, tmp_path, where):
    src = desidir / EDR
    size = src.stat().st_size
    nbytes = {"mid_header": 3 * BLOCK + 100, "mid_data": size // 2, "last_block": size - BLOCK}[where]
    bad = _cut(src, tmp_path / "coadd-sv3-dark-26065.fits", nbytes)
    with pytest.raises(TruncatedFileError) as err:
        desi.read_coadd(bad)
    assert str(bad) in str(err.value) and "truncated" in str(err.value)
    with pytest.raises(TruncatedFileError):
        desi.scan_coadd(bad)


def test_missing_hdu(desidir, tmp_path):
    bad = tmp_path / "coadd-nob.fits"
    with afits.open(desidir / SPECIAL) as hdul:
        afits.HDUList([h for h in hdul if h.name != "B_FLUX"]).writeto(bad)
    with pytest.raises(MissingHDUError, match="B_FLUX") as err:
        desi.read_coadd(bad)
    assert str(bad) in str(err.value)
    # the other arms are still readable on their own
    assert desi.read_coadd(bad, arms=["R"], redrock=None).arms["R"].flux.shape == (1, 2326)


def test_missing_fibermap(desidir, tmp_path):
    bad = tmp_path / "coadd-nofm.fits"
    with afits.open(desidir / SPECIAL) as hdul:
        afits.HDUList([h for h in hdul if h.name != "FIBERMAP"]).writeto(bad)
    with pytest.raises(MissingHDUError, match="FIBERMAP"):
        desi.read_coadd(bad)


def test_empty_fibermap(desidir, tmp_path):
    bad = tmp_path / "coadd-empty.fits"
    with afits.open(desidir / SPECIAL) as hdul:
        hdus = [afits.BinTableHDU(h.data[:0], header=h.header, name="FIBERMAP") if h.name == "FIBERMAP" else h
                for h in hdul]
        afits.HDUList(hdus).writeto(bad)
    with pytest.raises(EmptyFileError, match="FIBERMAP is empty") as err:
        desi.read_coadd(bad)
    assert str(bad) in str(err.value)


def test_garbage_bytes(tmp_path, rng):
    bad = tmp_path / "coadd-garbage.fits"
    bad.write_bytes(rng.integers(0, 256, 5 * BLOCK, dtype=np.uint8).tobytes())
    with pytest.raises(NotFitsError, match="not a FITS file") as err:
        desi.read_coadd(bad)
    assert str(bad) in str(err.value)
    empty = tmp_path / "coadd-empty.fits"
    empty.touch()
    with pytest.raises(NotFitsError, match="empty"):
        desi.read_coadd(empty)


def test_garbage_inside_a_header(desidir, tmp_path, rng):
    """Random bytes over the FIBERMAP header: CFITSIO stops there; reported as damaged."""
    data = bytearray((desidir / SPECIAL).read_bytes())
    start = fitsio.FITS(str(desidir / SPECIAL))["FIBERMAP"].get_offsets()["header_start"]
    data[start:start + BLOCK] = rng.integers(0, 256, BLOCK, dtype=np.uint8).tobytes()
    bad = tmp_path / "coadd-damaged.fits"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputFileError) as err:
        desi.read_coadd(bad)
    assert isinstance(err.value, (TruncatedFileError, NotFitsError))
    assert str(bad) in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileAccessError, match="no such file"):
        desi.read_coadd(tmp_path / "nope.fits")
    with pytest.raises(FileAccessError, match="directory"):
        desi.read_coadd(tmp_path)


def test_unreadable_file(desidir, tmp_path):
    """chmod 000: a FileAccessError for ordinary users; root reads it anyway, and so do we."""
    bad = tmp_path / EDR
    shutil.copy(desidir / EDR, bad)
    bad.chmod(0)
    try:
        if os.access(bad, os.R_OK):  # root: permissions do not apply
            assert len(desi.read_coadd(bad, redrock=None)) == 5
        else:
            with pytest.raises(FileAccessError, match="permission denied"):
                desi.read_coadd(bad)
    finally:
        bad.chmod(0o644)


def test_permission_error_is_typed(desidir, monkeypatch):
    """Whoever runs the tests, a PermissionError on open becomes a FileAccessError naming the file."""
    real_open = builtins.open
    target = str(desidir / EDR)

    def guarded(file, *args, **kwargs):
        if os.fspath(file) == target:
            raise PermissionError(13, "Permission denied", target)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    with pytest.raises(FileAccessError, match="permission denied") as err:
        desi.read_coadd(target)
    assert target in str(err.value)


def test_read_keywords_agrees_with_fitsio(realdata):
    """The raw-card keyword reader gives what fitsio's full header parse gives, every real file."""
    from catalog_tool.io.fitsutil import open_fits, read_keywords

    files = sorted(realdata.glob("*/*.fits*"))
    assert len(files) >= 10
    for path in files:
        with open_fits(path) as fits:
            for ext in range(len(fits)):
                header = fits[ext].read_header()
                keys = [k for k in header.keys() if k and k not in ("COMMENT", "HISTORY", "CONTINUE")]
                got = read_keywords(fits, ext, keys + ["NOT_THERE"], path)
                assert "NOT_THERE" not in got
                for key in keys:
                    want = header[key]
                    if isinstance(want, str):
                        want = want.rstrip()
                    assert got[key] == want, (path.name, ext, key)


# ---------------------------------------------------------------------------------------------
# damaged coadds are reported, never taken for companions or half read (issue 14)

def _without(src, dst, drop):
    with afits.open(src) as hdul:
        afits.HDUList([h for h in hdul if not drop(h.name)]).writeto(dst)


@pytest.mark.parametrize("drop, first_missing", [
    (lambda n: n[:2] in ("B_", "R_", "Z_"), "B_WAVELENGTH"),   # every arm removed, FIBERMAP kept
    (lambda n: n.startswith(("R_", "Z_")) or n == "SCORES", "R_WAVELENGTH"),  # cut after B_RESOLUTION
    (lambda n: n == "Z_IVAR", "Z_IVAR"),
])
def test_damaged_coadd_is_a_coadd_and_scan_names_what_is_missing(desidir, tmp_path, drop, first_missing):
    bad = tmp_path / "coadd-damaged.fits"
    _without(desidir / SPECIAL, bad, drop)
    with fitsio.FITS(str(bad)) as fits:
        assert desi.classify(fits) == "coadd"
    with pytest.raises(MissingHDUError, match=f"'{first_missing}' is missing.*its 1 FIBERMAP rows are not annotated"):
        desi.scan_coadd(bad)


def test_companions_stay_companions(desidir, tmp_path):
    for name in ("redrock-special-dark-27247.fits", "redrock-4-80613-thru20210324.fits"):
        with fitsio.FITS(str(desidir / name)) as fits:
            assert desi.classify(fits) == "companion"
    # a FIBERMAP beside a table no coadd has (an afterburner's) is a companion too
    other = tmp_path / "qso_mgii-x.fits"
    with fitsio.FITS(str(other), "rw") as out:
        out.write(None)
        out.write(np.zeros(2, dtype=[("TARGETID", "i8")]), extname="MGII")
        out.write(np.zeros(2, dtype=[("TARGETID", "i8"), ("TARGET_RA", "f8"), ("TARGET_DEC", "f8")]),
                  extname="FIBERMAP")
    with fitsio.FITS(str(other)) as fits:
        assert desi.classify(fits) == "companion"


def test_resolution_in_some_arms_only_is_damage(desidir, tmp_path):
    bad = tmp_path / "coadd-nozres.fits"
    _without(desidir / SPECIAL, bad, lambda n: n == "Z_RESOLUTION")
    with pytest.raises(MissingHDUError, match="Z_RESOLUTION"):
        desi.scan_coadd(bad)


@pytest.mark.parametrize("change, message", [
    (lambda w: w * 10, "spans 36000-58000 A, outside the DESI B arm"),
    (lambda w: w[::-1], "not a finite, increasing"),
    (lambda w: np.where(np.arange(w.size) == 3, np.nan, w), "not a finite, increasing"),
    (lambda w: w * 1.1, "outside the DESI B arm"),
])
def test_implausible_wavelengths_are_refused(desidir, tmp_path, change, message):
    bad = tmp_path / "coadd-wave.fits"
    shutil.copyfile(desidir / SPECIAL, bad)
    with fitsio.FITS(str(bad), "rw") as fits:
        fits["B_WAVELENGTH"].write(change(fits["B_WAVELENGTH"].read()))
    with pytest.raises(UnknownLayoutError, match=message):
        desi.read_coadd(bad, arms=("B",), redrock=None)
    assert desi.read_coadd(bad, arms=("R",), redrock=None).arms["R"].nspec == 1  # the others are fine
