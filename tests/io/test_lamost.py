"""LAMOST reader: every real file in ../shared/realdata/lamost, and damaged copies of them."""

from __future__ import annotations

import gzip
import math
import os
import shutil

import healpy
import numpy as np
import pytest
from astropy.io import fits as afits

from catalog_tool.batch import PAD_MASK_BIT
from catalog_tool.errors import (
    EmptyFileError,
    FileAccessError,
    InputFileError,
    MissingHDUError,
    NotFitsError,
    TruncatedFileError,
    UnknownLayoutError,
)
from catalog_tool.io.lamost import (
    BAD_MASK_VALUE_BIT,
    LAMOST_META,
    detect_layout,
    read_lamost,
    read_lamost_files,
    scan_lamost,
    synthetic_obsid,
)
from catalog_tool.io.release import FileEntry, discover

# The layout each real file is known to have (the reader must find it from the structure).
EXPECTED = {
    "dr1-spec-55862-B6212_sp06-005.fits": "dr1",
    "dr1-spec-55862-B6212_sp06-006.fits": "dr1",
    "dr7-spec-55917-B5591705_sp13-116.fits.gz": "dr7",
    "dr7-spec-56201-EG020224N124106V01_sp01-098.fits": "dr7",
    "dr7-spec-56286-HD100408N031203B04_sp08-071.fits": "dr7",
    "dr10-3703110.fits": "dr10",
    "dr10-3706009.fits": "dr10",
    "dr10-3706011.fits": "dr10",
    "dr10-3706103.fits": "dr10",
}
FILES = sorted(EXPECTED)
DR7_PLAIN = "dr7-spec-56286-HD100408N031203B04_sp08-071.fits"
DR10 = "dr10-3706103.fits"
DR1 = "dr1-spec-55862-B6212_sp06-005.fits"


def _astropy(path):
    """(header, flux, ivar, wave or None, andmask, ormask) read independently with astropy."""
    with afits.open(path) as hdul:
        hdr = hdul[0].header.copy()
        if hdul[0].data is not None:
            d = np.array(hdul[0].data, dtype=np.float64)
            return hdr, d[0], d[1], d[2], d[3], d[4]
        t = hdul["COADD"].data
        return (hdr, *(np.array(t[c][0], dtype=np.float64)
                       for c in ("FLUX", "IVAR", "WAVELENGTH", "ANDMASK", "ORMASK")))


def test_realdata_holds_the_expected_files(realdata):
    found = sorted(p.name for p in (realdata / "lamost").iterdir())
    assert found == FILES
    layouts = [EXPECTED[f] for f in found]
    assert (layouts.count("dr1"), layouts.count("dr7"), layouts.count("dr10")) == (2, 3, 4)


@pytest.mark.parametrize("name", FILES)
def test_layout_detected_from_structure(realdata, name):
    assert detect_layout(realdata / "lamost" / name) == EXPECTED[name]
    assert read_lamost(realdata / "lamost" / name).meta["LAYOUT"][0] == EXPECTED[name]


def test_layout_ignores_the_file_name(realdata, tmp_path):
    # Each file copied under the name of another layout keeps its own layout.
    for src, fake in [(DR7_PLAIN, "dr10-123.fits"), (DR1, "dr7-spec-x.fits"), (DR10, "dr1-spec.fits")]:
        dst = tmp_path / fake
        shutil.copy(realdata / "lamost" / src, dst)
        assert detect_layout(dst) == EXPECTED[src]


@pytest.mark.parametrize("name", FILES)
def test_arrays_match_astropy(realdata, name):
    path = realdata / "lamost" / name
    batch = read_lamost(path)
    hdr, flux, ivar, row3, andmask, ormask = _astropy(path)
    arm = batch.arms["LRS"]
    npix = flux.size
    assert list(batch.arms) == ["LRS"] and len(batch) == 1
    assert arm.wave.shape == arm.flux.shape == arm.ivar.shape == arm.mask.shape == (1, npix)
    assert (arm.wave.dtype, arm.flux.dtype, arm.ivar.dtype, arm.mask.dtype) == (
        np.float64, np.float32, np.float32, np.uint32)
    np.testing.assert_array_equal(arm.flux[0], flux)
    np.testing.assert_array_equal(arm.ivar[0], ivar)
    np.testing.assert_array_equal(arm.mask[0], andmask.astype(np.uint32))
    assert np.count_nonzero(flux) > npix // 2  # real data, not zeros
    if EXPECTED[name] == "dr1":
        # the third row is the sub-continuum, never used as wavelength
        expected_wave = 10.0 ** (hdr["COEFF0"] + hdr["COEFF1"] * np.arange(npix))
        np.testing.assert_allclose(arm.wave[0], expected_wave, rtol=1e-14)
        assert not np.allclose(row3, arm.wave[0])
    else:
        np.testing.assert_array_equal(arm.wave[0], row3)


@pytest.mark.parametrize("name", FILES)
def test_wavelength_grid_is_lamost_lrs(realdata, name):
    wave = read_lamost(realdata / "lamost" / name).arms["LRS"].wave[0]
    assert 3695 < wave[0] < 3705 and 9075 < wave[-1] < 9105
    step = np.diff(np.log10(wave))
    assert abs(np.median(step) - 1e-4) < 1e-8
    assert np.all(np.abs(step - 1e-4) < 1e-6)  # float32 storage jitter only


@pytest.mark.parametrize("name", FILES)
def test_metadata_matches_header(realdata, name):
    path = realdata / "lamost" / name
    meta = read_lamost(path).meta
    hdr = _astropy(path)[0]
    assert set(meta) == set(LAMOST_META)
    for col, dtype in LAMOST_META.items():
        assert meta[col].dtype.kind == "U" if dtype == "U" else meta[col].dtype == dtype, col
    m = {k: v[0] for k, v in meta.items()}
    assert m["SURVEY"] == "lamost" and m["ROW"] == 0 and m["SOURCE"] == str(path)
    assert m["FIBER_KIND"] == "target"
    assert m["TARGET_RA"] == hdr["RA"] and m["TARGET_DEC"] == hdr["DEC"]
    assert m["HEALPIX"] == healpy.ang2pix(64, hdr["RA"], hdr["DEC"], nest=True, lonlat=True)
    for key in ("DESIG", "CLASS", "SUBCLASS", "PLANID"):
        assert m[key] == hdr[key].strip()
    for key in ("Z", "Z_ERR"):
        if hdr[key] == -9999:
            assert math.isnan(m[key])
        else:
            assert m[key] == hdr[key]
    for band in "UGRIZ":
        value = hdr.get(f"SNR{band}", hdr.get(f"SN_{band}"))
        assert m[f"SNR{band}"] == np.float32(value)
    assert m["MJD"] == hdr["MJD"] and m["LMJD"] == hdr["LMJD"]
    assert m["SPID"] == hdr["SPID"] and m["FIBERID"] == hdr["FIBERID"]
    if "OBSID" in hdr:
        assert m["TARGETID"] == m["OBSID"] == hdr["OBSID"]
        assert m["PROGRAM"] == hdr["DATA_V"].split()[-1].lower()
    else:
        assert m["OBSID"] == -1 and m["PROGRAM"] == "dr1"
        assert m["TARGETID"] == synthetic_obsid(lmjd=hdr["LMJD"], planid=hdr["PLANID"].strip(),
                                                spid=hdr["SPID"], fiberid=hdr["FIBERID"])


def test_sentinel_redshift_becomes_nan(realdata):
    meta = read_lamost(realdata / "lamost" / "dr7-spec-56201-EG020224N124106V01_sp01-098.fits").meta
    assert math.isnan(meta["Z"][0]) and math.isnan(meta["Z_ERR"][0])
    assert meta["SNRG"][0] == np.float32(13.39)


def test_dr1_ids_are_synthetic_unique_and_stable(realdata):
    a = read_lamost(realdata / "lamost" / DR1)
    b = read_lamost(realdata / "lamost" / "dr1-spec-55862-B6212_sp06-006.fits")
    ta, tb = int(a.targetid[0]), int(b.targetid[0])
    assert ta != tb and ta >> 62 == 1 and tb >> 62 == 1
    assert ta & 0xFF == 5 and tb & 0xFF == 6  # FIBERID in the low byte
    assert (ta >> 8) & 0x1F == 6 and (ta >> 13) & 0x1FFFF == 55862
    assert read_lamost(realdata / "lamost" / DR1).targetid[0] == ta
    assert any("no OBSID" in p for p in a.problems)
    assert synthetic_obsid(lmjd=55862, planid="B6212", spid=6, fiberid=5) != synthetic_obsid(
        lmjd=55862, planid="B6213", spid=6, fiberid=5)
    with pytest.raises(ValueError):
        synthetic_obsid(lmjd=55862, planid="B6212", spid=6, fiberid=300)


def test_read_many_concatenates_and_pads(realdata):
    paths = [realdata / "lamost" / n for n in FILES]
    batch, failures = read_lamost_files(paths)
    assert failures == []
    assert len(batch) == len(FILES)
    arm = batch.arms["LRS"]
    assert arm.flux.shape == (len(FILES), 3909) and arm.wave.shape == (len(FILES), 3909)
    for i, path in enumerate(paths):
        one = read_lamost(path)
        n = one.arms["LRS"].flux.shape[1]
        np.testing.assert_array_equal(arm.flux[i, :n], one.arms["LRS"].flux[0])
        np.testing.assert_array_equal(arm.wave[i, :n], one.arms["LRS"].wave[0])
        assert np.all(np.isnan(arm.wave[i, n:])) and np.all(arm.mask[i, n:] == PAD_MASK_BIT)
        assert np.all(arm.ivar[i, n:] == 0)
        assert batch.meta["TARGETID"][i] == one.targetid[0]
        assert batch.meta["SOURCE"][i] == str(path)
    assert len(np.unique(batch.targetid)) == len(FILES)
    # grouped problems: one line for both DR1 files, not one per file
    obsid_lines = [p for p in batch.problems if "no OBSID" in p]
    assert len(obsid_lines) == 1 and "2 file(s)" in obsid_lines[0]


def test_read_many_reports_bad_files_and_keeps_the_rest(realdata, tmp_path):
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"not a fits file at all" * 200)
    good = [realdata / "lamost" / DR10, realdata / "lamost" / DR1]
    batch, failures = read_lamost_files([good[0], bad, good[1]])
    assert len(batch) == 2
    assert list(batch.meta["SOURCE"]) == [str(good[0]), str(good[1])]
    assert len(failures) == 1 and failures[0][0] == str(bad) and "not a FITS file" in failures[0][1]


def test_read_many_all_bad_gives_empty_batch(tmp_path):
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"\x00" * 100)
    batch, failures = read_lamost_files([bad, tmp_path / "missing.fits"])
    assert len(batch) == 0 and batch.arms["LRS"].flux.shape[0] == 0
    assert [f[0] for f in failures] == [str(bad), str(tmp_path / "missing.fits")]


# ---------------------------------------------------------------------------------------------
# damaged and edited copies
# ---------------------------------------------------------------------------------------------

def _edited_image(realdata, tmp_path, name=DR7_PLAIN, *, data=None, drop=(), set_=None):
    """A copy of a real image-layout file with its data and/or header edited (astropy)."""
    with afits.open(realdata / "lamost" / name) as hdul:
        hdr = hdul[0].header.copy()
        arr = np.array(hdul[0].data) if data is None else data(np.array(hdul[0].data))
    for key in drop:
        del hdr[key]
    for key, value in (set_ or {}).items():
        hdr[key] = value
    out = tmp_path / "edited.fits"
    afits.PrimaryHDU(arr, hdr).writeto(out, overwrite=True)
    return out


def test_truncated_plain_file(realdata, tmp_path):
    raw = (realdata / "lamost" / DR7_PLAIN).read_bytes()
    for cut in (len(raw) // 2, 2880 * 2, 1000):
        out = tmp_path / f"cut{cut}.fits"
        out.write_bytes(raw[:cut])
        with pytest.raises((TruncatedFileError, NotFitsError)) as err:
            read_lamost(out)
        assert str(out) in str(err.value)
    out = tmp_path / "half.fits"
    out.write_bytes(raw[: len(raw) // 2 // 2880 * 2880])
    with pytest.raises(TruncatedFileError, match="truncated"):
        read_lamost(out)


def test_cut_gzip(realdata, tmp_path):
    raw = (realdata / "lamost" / "dr7-spec-55917-B5591705_sp13-116.fits.gz").read_bytes()
    out = tmp_path / "cut.fits.gz"
    out.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(TruncatedFileError, match="cut.fits.gz"):
        read_lamost(out)
    # a complete gzip stream of a FITS file cut short inside: also truncated
    inner = gzip.decompress(raw)
    out2 = tmp_path / "cut2.fits.gz"
    out2.write_bytes(gzip.compress(inner[:-20000]))
    with pytest.raises(TruncatedFileError):
        read_lamost(out2)


def test_gzip_of_each_layout_reads_the_same(realdata, tmp_path):
    for name in (DR1, DR10):
        out = tmp_path / (name + ".gz")
        out.write_bytes(gzip.compress((realdata / "lamost" / name).read_bytes()))
        a, b = read_lamost(out), read_lamost(realdata / "lamost" / name)
        np.testing.assert_array_equal(a.arms["LRS"].flux, b.arms["LRS"].flux)
        np.testing.assert_array_equal(a.arms["LRS"].wave, b.arms["LRS"].wave)
        assert a.meta["LAYOUT"][0] == EXPECTED[name]


def test_garbage_bytes(tmp_path, rng):
    out = tmp_path / "garbage.fits"
    out.write_bytes(rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(NotFitsError, match="garbage.fits"):
        read_lamost(out)


def test_garbage_after_a_valid_header_start(realdata, tmp_path, rng):
    raw = bytearray((realdata / "lamost" / DR7_PLAIN).read_bytes())
    raw[400:2880 * 3] = rng.integers(0, 256, 2880 * 3 - 400, dtype=np.uint8).tobytes()
    out = tmp_path / "mangled.fits"
    out.write_bytes(bytes(raw))
    with pytest.raises((NotFitsError, TruncatedFileError), match="mangled.fits"):
        read_lamost(out)


def test_missing_file(tmp_path):
    with pytest.raises(FileAccessError, match="no such file"):
        read_lamost(tmp_path / "nope.fits")


def _dr10_primary(hdul):
    # DR10 primaries carry NAXIS1/NAXIS2 with NAXIS = 0, which astropy refuses to write.
    hdr = hdul[0].header.copy()
    del hdr["NAXIS1"], hdr["NAXIS2"]
    return afits.PrimaryHDU(header=hdr)


def test_dr10_without_coadd_hdu(realdata, tmp_path):
    with afits.open(realdata / "lamost" / DR10) as hdul:
        out = tmp_path / "nocoadd.fits"
        afits.HDUList([_dr10_primary(hdul)]).writeto(out)
    with pytest.raises(MissingHDUError, match="COADD"):
        read_lamost(out)
    with pytest.raises(MissingHDUError):
        detect_layout(out)


def test_dr10_with_empty_or_renamed_columns(realdata, tmp_path):
    with afits.open(realdata / "lamost" / DR10) as hdul:
        primary = _dr10_primary(hdul)
        table = hdul["COADD"]
        empty = afits.BinTableHDU.from_columns(
            [afits.Column(name=c.name, format=c.format, array=np.zeros((0, 3909), np.float32))
             for c in table.columns], name="COADD")
        cols = [afits.Column(name="FLUXES" if c.name == "FLUX" else c.name, format=c.format,
                             array=table.data[c.name]) for c in table.columns]
        renamed = afits.BinTableHDU.from_columns(cols, name="COADD")
        afits.HDUList([primary, empty]).writeto(tmp_path / "empty.fits")
        afits.HDUList([primary.copy(), renamed]).writeto(tmp_path / "renamed.fits")
    with pytest.raises(EmptyFileError, match="no rows"):
        read_lamost(tmp_path / "empty.fits")
    with pytest.raises(UnknownLayoutError, match="FLUX"):
        read_lamost(tmp_path / "renamed.fits")


def test_image_of_four_rows_is_unknown_layout(realdata, tmp_path):
    out = _edited_image(realdata, tmp_path, data=lambda d: d[:4])
    with pytest.raises(UnknownLayoutError, match=r"\(4, 3901\)"):
        read_lamost(out)
    out = _edited_image(realdata, tmp_path, data=lambda d: d[0])
    with pytest.raises(UnknownLayoutError):
        detect_layout(out)


def test_third_row_neither_wavelength_nor_coefficients(realdata, tmp_path):
    # A dr7 image whose wavelength row is reversed is not a grid; without COEFF0/1 it is unknown.
    def reverse_row3(d):
        d[2] = d[2][::-1]
        return d
    out = _edited_image(realdata, tmp_path, data=reverse_row3, drop=("COEFF0", "COEFF1"))
    with pytest.raises(UnknownLayoutError, match="COEFF0"):
        read_lamost(out)
    # ... and with them it is read as dr1 (sub-continuum in row 3)
    out = _edited_image(realdata, tmp_path, data=reverse_row3)
    assert detect_layout(out) == "dr1"


def test_mask_is_andmask_converted_to_uint32(realdata, tmp_path):
    def set_masks(d):
        d[3, 10] = 4.0           # ANDMASK bit 2
        d[3, 11] = 64.0 + 1.0    # bits 6 and 0
        d[3, 12] = np.nan        # not a mask value
        d[3, 13] = -1.0          # not a mask value
        d[4, 20] = 8.0           # ORMASK only: ignored
        return d
    batch = read_lamost(_edited_image(realdata, tmp_path, data=set_masks))
    mask = batch.arms["LRS"].mask[0]
    assert mask[10] == 4 and mask[11] == 65
    assert mask[12] == BAD_MASK_VALUE_BIT and mask[13] == BAD_MASK_VALUE_BIT
    assert mask[20] == 0 and np.count_nonzero(mask) == 4
    assert any("2 ANDMASK values" in p for p in batch.problems)


def test_missing_keywords_become_nan_and_are_reported(realdata, tmp_path):
    out = _edited_image(realdata, tmp_path, drop=("SNRG", "CLASS", "RA"))
    batch = read_lamost(out)
    assert math.isnan(batch.meta["SNRG"][0]) and batch.meta["CLASS"][0] == ""
    assert math.isnan(batch.meta["TARGET_RA"][0]) and batch.meta["HEALPIX"][0] == -1
    assert batch.meta["SNRR"][0] == np.float32(_astropy(out)[0]["SNRR"])
    text = " ".join(batch.problems)
    assert "SNRG" in text and "CLASS" in text and "HEALPIX -1" in text and str(out) in text


def test_unidentifiable_spectrum_is_an_error(realdata, tmp_path):
    out = _edited_image(realdata, tmp_path, drop=("OBSID", "FIBERID"))
    with pytest.raises(InputFileError, match="cannot be identified"):
        read_lamost(out)
    batch, failures = read_lamost_files([out])
    assert len(batch) == 0 and "cannot be identified" in failures[0][1]


def test_sky_fibre_and_release_keyword(realdata, tmp_path):
    out = _edited_image(realdata, tmp_path, set_={"FIBERTYP": "Sky", "DATA_V": "LAMOST LRS DR9 v2.0"})
    meta = read_lamost(out).meta
    assert meta["FIBER_KIND"][0] == "sky" and meta["PROGRAM"][0] == "dr9"


# ---------------------------------------------------------------------------------------------
# scan (headers only) and discovery
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FILES)
def test_scan_matches_read(realdata, name):
    path = realdata / "lamost" / name
    entry = scan_lamost(path)
    meta = read_lamost(path).meta
    assert isinstance(entry, FileEntry)
    assert (entry.kind, entry.survey, entry.nspec, entry.layout) == ("lamost", "lamost", 1, EXPECTED[name])
    assert entry.program == meta["PROGRAM"][0] == ("dr1" if name.startswith("dr1-") else name.split("-")[0])
    assert entry.healpix == meta["HEALPIX"][0] >= 0
    assert entry.nbytes == path.stat().st_size and entry.path == os.path.abspath(path)


def test_scan_reports_the_same_errors(realdata, tmp_path):
    with pytest.raises(UnknownLayoutError):
        scan_lamost(_edited_image(realdata, tmp_path, data=lambda d: d[:4]))
    with pytest.raises(InputFileError, match="cannot be identified"):
        scan_lamost(_edited_image(realdata, tmp_path, drop=("OBSID", "LMJD")))


def test_discover_indexes_every_lamost_file(realdata, tmp_path):
    tree = tmp_path / "lamost"
    tree.mkdir()
    for name in FILES:
        shutil.copy(realdata / "lamost" / name, tree / name)
    (tree / "broken.fits").write_bytes((realdata / "lamost" / DR10).read_bytes()[:20000])
    index = discover([tree])
    assert sorted(os.path.basename(e.path) for e in index.entries) == FILES
    assert {e.layout for e in index.entries} == {"dr1", "dr7", "dr10"}
    assert [e.healpix for e in index.entries] == sorted(e.healpix for e in index.entries)
    assert [(os.path.basename(p), "truncated" in r) for p, r in index.skipped] == [("broken.fits", True)]


def test_discover_skips_a_damaged_header(realdata, tmp_path, rng):
    raw = bytearray((realdata / "lamost" / DR7_PLAIN).read_bytes())
    raw[400:2880 * 3] = rng.integers(0, 256, 2880 * 3 - 400, dtype=np.uint8).tobytes()
    (tmp_path / "mangled.fits").write_bytes(bytes(raw))
    shutil.copy(realdata / "lamost" / DR10, tmp_path / DR10)
    index = discover([tmp_path])
    assert [os.path.basename(e.path) for e in index.entries] == [DR10]
    assert [os.path.basename(p) for p, _ in index.skipped] == ["mangled.fits"]


# ----------------------------------------------------------------------------------------------
# The primary header read from its bytes (fitsutil.read_header_cards) gives what fitsio's
# read_header gives: same batches, same scan entries, on every kind of file the reader meets.

def _fitsio_header(fits, path):
    from catalog_tool.io.fitsutil import read_header

    return read_header(fits[0], path)


def _header_cases(realdata, tmp_path) -> list:
    from catalog_tool.sim.lamost import simulate_lamost

    paths = [realdata / "lamost" / n for n in FILES]
    for name in FILES:  # gzip copies: the header comes from CFITSIO's decompressed stream
        if not name.endswith(".gz"):
            out = tmp_path / f"gz-{name}.gz"
            out.write_bytes(gzip.compress((realdata / "lamost" / name).read_bytes()))
            paths.append(out)
    for layout in ("dr1", "dr7", "dr10"):
        simulate_lamost(tmp_path / f"sim-{layout}", n=4, seed=5, layout=layout, gzip=layout == "dr7")
        paths += sorted((tmp_path / f"sim-{layout}").rglob("spec-*.fits*"))
    # edge cards: a CONTINUE'd long string with a quote inside, then (written by hand, as astropy
    # would not) a duplicate name (the last card wins), an empty value, an unquoted string and a
    # D exponent
    styled = tmp_path / "styled.fits"
    with afits.open(realdata / "lamost" / DR7_PLAIN) as hdul:
        hdul[0].header["OBJNAME"] = "O'Brien " + "long " * 20
        hdul.writeto(styled)
    raw = styled.read_bytes()
    with afits.open(styled) as hdul:
        data_start = hdul[0]._data_offset
    text = raw[:data_start].decode("ascii")
    cards = [text[i:i + 80] for i in range(0, len(text), 80)]
    end = next(i for i, c in enumerate(cards) if c.startswith("END     "))
    extra = ["SPID    =                    7 / duplicate: the last card of a name wins",
             "FIBERTYP=                      / empty value",
             "OBJTYPE = Star                 / unquoted (not standard)",
             "COEFF1  =              1.0D-04 / D exponent"]
    header = "".join(cards[:end]) + "".join(c.ljust(80) for c in extra) + "END".ljust(80)
    header = header.ljust(-(-len(header) // 2880) * 2880)
    edge = tmp_path / "edge.fits"
    edge.write_bytes(header.encode("ascii") + raw[data_start:])
    return [*paths, styled, edge]


def _same_batch(a, b):
    assert set(a.meta) == set(b.meta)
    for k in a.meta:
        np.testing.assert_array_equal(a.meta[k], b.meta[k], err_msg=k)
    for name in a.arms:
        for f in ("wave", "flux", "ivar", "mask"):
            np.testing.assert_array_equal(getattr(a.arms[name], f), getattr(b.arms[name], f))
    assert a.problems == b.problems


def test_header_from_bytes_equals_fitsio_read_header(realdata, tmp_path, monkeypatch):
    import catalog_tool.io.lamost as lamost_mod
    from catalog_tool.io.fitsutil import HeaderCards

    paths = _header_cases(realdata, tmp_path)
    assert len(paths) == 9 + 8 + 12 + 2, [p.name for p in paths]  # real, gzip copies, simulated, edge
    fast = {p: (read_lamost_files([p]), scan_lamost(p)) for p in paths}
    seen = []
    real = lamost_mod._primary_header
    monkeypatch.setattr(lamost_mod, "_primary_header", lambda f, p: seen.append(type(real(f, p))) or real(f, p))
    read_lamost_files(paths[:1])
    assert seen == [HeaderCards]  # the fast path is the one compared
    monkeypatch.setattr(lamost_mod, "_primary_header", _fitsio_header)
    for p in paths:
        (batch_f, fail_f), entry_f = fast[p]
        batch_s, fail_s = read_lamost_files([p])
        assert fail_f == fail_s == [], p
        _same_batch(batch_f, batch_s)
        assert scan_lamost(p) == entry_f, p
    edge = read_lamost_files([tmp_path / "edge.fits"])[0].meta
    assert edge["SPID"][0] == 7 and edge["OBJTYPE"][0] == "Star"


def test_a_large_gzip_file_has_its_header_read_by_fitsio(realdata, tmp_path, monkeypatch):
    """read_raw copies a whole decompressed file: above the limit the header comes from fitsio."""
    import fitsio

    from catalog_tool.io import fitsutil

    out = tmp_path / "big.fits.gz"
    out.write_bytes(gzip.compress((realdata / "lamost" / DR7_PLAIN).read_bytes()))
    with fitsutil.open_fits(out) as fits:
        assert isinstance(fitsutil.read_header_cards(fits, 0, out), fitsutil.HeaderCards)
        monkeypatch.setattr(fitsutil, "_RAW_GZIP_MAX", 1000)
        small_limit = fitsutil.read_header_cards(fits, 0, out)
    assert isinstance(small_limit, fitsio.FITSHDR)
    np.testing.assert_array_equal(read_lamost(out).meta["OBSID"], read_lamost(realdata / "lamost" / DR7_PLAIN).meta["OBSID"])
