"""Raw image HDUs and checksums of catalog_tool.sim._fitsraw against fitsio and astropy."""

from __future__ import annotations

import warnings

import fitsio
import numpy as np
import pytest
from astropy.io import fits as afits

from catalog_tool.sim import _fitsraw as fr


def _reference(path, tab, images):
    with fitsio.FITS(path, "rw", clobber=True) as f:
        f.write(None, header=[{"name": "X", "value": "hello"}])
        f.write(tab, extname="T")
        for name, arr in images.items():
            f.write(arr, extname=name)
        for hdu in f:
            hdu.write_checksum()


def _ours(path, tab, images, order):
    with fitsio.FITS(path, "rw", clobber=True) as f:
        f.write(None, header=[{"name": "X", "value": "hello"}])
        f.write(tab, extname="T")
        for hdu in f:
            fr.add_checksum_placeholders(hdu)
    w = fr.RawImageWriter(path, [(n, a.dtype, a.shape, [("BUNIT", "Angstrom", "")]) for n, a in images.items()])
    for name, arr in images.items():
        for lo, hi in order(arr.shape[0]):  # rows written out of order, in pieces
            w.write_rows(name, lo, arr[lo:hi])
    w.close()
    fr.finalize_checksums(path, datasums=w.datasums())


@pytest.fixture
def content():
    rng = np.random.default_rng(4)
    tab = np.zeros(5, dtype=[("A", "i8"), ("B", "f4"), ("C", "S3")])
    tab["A"] = rng.integers(0, 1 << 60, 5)
    tab["C"] = "abc"
    images = {"F": rng.normal(size=(7, 13)).astype("f4"), "M": rng.integers(-9, 9, (6, 4, 5)).astype("i4"),
              "W": np.linspace(3600.0, 3700.0, 11)}
    return tab, images


def test_datasums_equal_cfitsio_and_checksums_verify(tmp_path, content):
    tab, images = content
    _reference(tmp_path / "ref.fits", tab, images)
    _ours(str(tmp_path / "ours.fits"), tab, images, lambda n: [(n // 2, n), (0, n // 2)])
    ref, ours = fitsio.FITS(tmp_path / "ref.fits"), fitsio.FITS(tmp_path / "ours.fits")
    assert len(ours) == 5
    for k in range(5):
        assert ours[k].read_header()["DATASUM"].strip() == ref[k].read_header()["DATASUM"].strip()
        ours[k].verify_checksum()  # raises on a mismatch
    for name, arr in images.items():
        assert np.array_equal(ours[name].read(), arr)
        assert ours[name].read_header()["BUNIT"] == "Angstrom"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # astropy warns on a checksum mismatch
        with afits.open(tmp_path / "ours.fits", checksum=True) as h:
            assert [x.name for x in h] == ["PRIMARY", "T", "F", "M", "W"]


def test_corruption_is_detected(tmp_path, content):
    tab, images = content
    path = tmp_path / "ours.fits"
    _ours(str(path), tab, images, lambda n: [(0, n)])
    raw = bytearray(path.read_bytes())
    off = fitsio.FITS(path)["M"].get_offsets()["data_start"]
    raw[off + 3] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(Exception, match="checksum"):
        fitsio.FITS(path)["M"].verify_checksum()
    fitsio.FITS(path)["F"].verify_checksum()


def test_unwritten_rows_read_as_zero(tmp_path, content):
    tab, images = content
    path = tmp_path / "gaps.fits"
    _ours(str(path), tab, images, lambda n: [(0, 2), (3, n)])  # row 2 never written
    f = fitsio.FITS(path)
    got = f["M"].read()
    assert np.all(got[2] == 0) and np.array_equal(got[3:], images["M"][3:])
    want = images["M"].copy()
    want[2] = 0
    assert f["M"].read_header()["DATASUM"] == str(fr.ones_sum(want.astype(">i4")))
    f["M"].verify_checksum()


def test_ones_complement_arithmetic():
    words = np.array([0xFFFFFFFF, 0x00000002, 0x80000000, 0x80000000], dtype=">u4")
    # 0xFFFFFFFF + 2 = 2**32 + 1 -> 2 (end-around carry); + 2**31 + 2**31 = 2 + 2**32 -> 3
    assert fr.ones_sum(words) == 3
    assert fr.ones_repeat(fr.ones_sum(words[1:2]), 3) == 6
    assert fr.ones_repeat(0x80000000, 2) == 1
    assert fr.ones_add(0xFFFFFFFE, 3) == 2
    # cfitsio ffesum(sum, complm=TRUE): the complement of 0 is 0xFFFFFFFF, bytes 0xFF -> "rooo".
    assert fr.encode_checksum(0) == "orrrrooooooooooo"
    assert fr.encode_checksum(0xFFFFFFFF) == "0000000000000000"
    rng = np.random.default_rng(2)
    for v in rng.integers(0, 2**32, 200).tolist():
        assert not set(fr.encode_checksum(v)) & set(":;<=>?@[\\]^_`")


def test_rows_that_do_not_fit_are_refused(tmp_path, content):
    tab, images = content
    path = tmp_path / "x.fits"
    with fitsio.FITS(path, "rw", clobber=True) as f:
        f.write(None)
    w = fr.RawImageWriter(str(path), [("F", "f4", (3, 4), [])], checksum=False)
    try:
        with pytest.raises(ValueError, match="do not fit"):
            w.write_rows("F", 2, np.zeros((2, 4), "f4"))
        with pytest.raises(ValueError, match="do not fit"):
            w.write_rows("F", 0, np.zeros((1, 5), "f4"))
    finally:
        w.close()
    with pytest.raises(ValueError, match="placeholder"):
        fr.finalize_checksums(str(path))
