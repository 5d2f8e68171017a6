"""Planning LAMOST files from a survey catalogue (io/lamost_catalog.py), on the real LAMOST files."""

from __future__ import annotations

import os

import fitsio
import numpy as np
import pytest

from catalog_tool.errors import ConfigError
from catalog_tool.io import lamost_catalog as lc
from catalog_tool.io import release
from catalog_tool.io.lamost import scan_lamost
from catalog_tool.sim.lamost import GENERAL_CATALOG_COLUMNS

#: (real file, name in the release tree, obsid, lmjd, planid, spid, fiberid, ra, dec) from the headers;
#: the DR1 file has no OBSID in its header, the catalogue gives it one
REAL = [
    ("dr1-spec-55862-B6212_sp06-005.fits", "spec-55862-B6212_sp06-005.fits", 101005, 55862, "B6212", 6, 5,
     99.499478, 27.152342),
    ("dr7-spec-55917-B5591705_sp13-116.fits.gz", "spec-55917-B5591705_sp13-116.fits.gz", 19013116, 55917,
     "B5591705", 13, 116, 184.850304, 28.382399),
    ("dr7-spec-56286-HD100408N031203B04_sp08-071.fits", "spec-56286-HD100408N031203B04_sp08-071.fits", 95008071,
     56286, "HD100408N031203B04", 8, 71, 152.185846, 2.732438),
    # fetched by obsid from the LAMOST web service: named OBSID.fits
    ("dr10-3703110.fits", "3703110.fits", 3703110, 55877, "B7708", 3, 110, 138.080956, 27.893459),
    ("dr10-3706009.fits", "spec-55877-B7708_sp06-009.fits", 3706009, 55877, "B7708", 6, 9, 141.017274, 26.602472),
]


def write_catalog(path, rows, *, dtypes=None, upper=False, drop=()):
    """A catalogue with the LRS General Catalogue's columns (real names and types unless overridden)."""
    dtypes = dict(GENERAL_CATALOG_COLUMNS, **(dtypes or {}))
    names = [n for n, _ in GENERAL_CATALOG_COLUMNS if n not in drop]
    data = np.zeros(len(rows), dtype=[(n.upper() if upper else n, dtypes[n]) for n in names])
    for i, r in enumerate(rows):
        for n in names:
            data[n.upper() if upper else n][i] = r.get(n, "" if dtypes[n][0] in "SU" else -9999)
    fitsio.write(os.fspath(path), data, extname="CATALOGUE", clobber=True)
    return path


def _row(obsid, lmjd, planid, spid, fiberid, ra, dec):
    return {"obsid": obsid, "lmjd": lmjd, "mjd": lmjd - 1, "planid": planid, "spid": spid, "fiberid": fiberid,
            "ra": ra, "dec": dec, "ra_obs": ra, "dec_obs": dec, "class": "STAR", "fibertype": "Obj"}


@pytest.fixture
def tree(realdata, tmp_path):
    """The real LAMOST files under archive-like names, in two plan folders."""
    root = tmp_path / "lamost"
    for i, (src, name, *_rest) in enumerate(REAL):
        folder = root / ("B6212" if i == 0 else "other")
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink(realdata / "lamost" / src, folder / name)
    rows = [_row(*r[2:]) for r in REAL]
    return root, rows


def test_catalogue_plan_matches_header_discovery_without_opening_a_spectrum(tree, tmp_path, monkeypatch):
    root, rows = tree
    cat = write_catalog(tmp_path / "dr10_v2.0_LRS_catalogue.fits", rows)
    opened = []
    real_fits = fitsio.FITS

    def spy(path, *a, **k):
        opened.append(os.path.abspath(os.fspath(path)))
        return real_fits(path, *a, **k)

    monkeypatch.setattr(fitsio, "FITS", spy)
    idx = lc.discover_with_catalog([root], cat)
    assert set(opened) == {os.path.abspath(cat)}  # the catalogue only
    monkeypatch.undo()

    assert not idx.missing and not idx.unlisted and not idx.skipped
    assert idx.rows == len(REAL)
    by_headers = release.discover([root])
    assert [(e.path, e.healpix) for e in idx.entries] == [(e.path, e.healpix) for e in by_headers.entries]
    assert {e.program for e in idx.entries} == {"dr10"}  # from the catalogue's file name
    assert all(e.kind == "lamost" and e.nspec == 1 for e in idx.entries)
    # and the pixel is the one the header scan gives, file by file
    for e in idx.entries:
        assert e.healpix == scan_lamost(e.path).healpix


def test_missing_unlisted_and_duplicate_rows(tree, tmp_path):
    root, rows = tree
    os.remove(next(root.rglob("spec-56286-*")))           # named by the catalogue, not there
    extra = root / "other" / "spec-57000-X1_sp01-001.fits"  # there, not in the catalogue
    os.symlink(next(root.rglob("3703110.fits")).resolve(), extra)
    again = root / "B6212" / "copy"                          # the same name a second time
    again.mkdir()
    os.symlink(next(root.rglob("spec-55862-*")).resolve(), again / "spec-55862-B6212_sp06-005.fits.gz")
    rows = rows + [dict(rows[1], obsid=1)]                   # two rows naming one file
    cat = write_catalog(tmp_path / "cat.fits", rows)
    idx = lc.discover_with_catalog([root], cat)

    assert [m.path for m in idx.missing] == ["spec-56286-HD100408N031203B04_sp08-071.fits"]
    m = idx.missing[0]
    assert (m.obsid, m.row, m.healpix) == (95008071, 2, int(release.radec_to_healpix(
        ra=np.array([152.185846]), dec=np.array([2.732438]))[0]))
    assert idx.unlisted == [os.fspath(extra)]
    reasons = dict(idx.skipped)
    assert "names the same file as row 1" in reasons[next(p for p in reasons if "B5591705" in p)]
    assert "read for catalogue row 0" in reasons[os.fspath(again / "spec-55862-B6212_sp06-005.fits.gz")]
    # every catalogue row is accounted for: a file, a missing entry or a skipped duplicate
    assert len(idx.entries) + len(idx.missing) + 1 == len(rows)
    lines = "\n".join(idx.lines())
    assert "1 missing" in lines and "not in the catalogue and are not read" in lines


def test_any_case_and_integer_width_and_filename_column(tree, tmp_path):
    root, rows = tree
    cat = write_catalog(tmp_path / "c.fits", rows, upper=True,
                        dtypes={"obsid": "i8", "lmjd": "i8", "spid": "i2", "fiberid": "i8", "ra": "f4", "dec": "f4"})
    idx = lc.discover_with_catalog([root], cat)
    assert len(idx.entries) == len(REAL) and not idx.missing
    assert {e.program for e in idx.entries} == {""}  # no release in its name or header

    # a catalogue with a filename column names the files directly (any folder in it is ignored)
    data = fitsio.read(os.fspath(cat))
    names = np.array([f"/archive/{r[1].removesuffix('.gz')}" for r in REAL])
    from numpy.lib import recfunctions as rfn

    data = rfn.drop_fields(data, ["LMJD", "PLANID", "SPID", "FIBERID"], usemask=False)
    data = rfn.append_fields(data, "filename", names, usemask=False)
    fitsio.write(os.fspath(tmp_path / "f.fits"), data, clobber=True)
    idx = lc.discover_with_catalog([root], tmp_path / "f.fits")
    assert len(idx.entries) == len(REAL) and not idx.missing and not idx.unlisted


def test_ra_obs_when_no_ra_and_sentinel_positions(tree, tmp_path):
    root, rows = tree
    rows = [dict(r) for r in rows]
    rows[0]["ra_obs"] = rows[0]["dec_obs"] = -9999.0
    cat = write_catalog(tmp_path / "c.fits", rows, drop=("ra", "dec"))
    idx = lc.discover_with_catalog([root], cat)
    pix = {os.path.basename(e.path): e.healpix for e in idx.entries}
    assert pix["spec-55862-B6212_sp06-005.fits"] == -1  # -9999 is LAMOST's null: no pixel
    assert pix["3703110.fits"] == scan_lamost(next(root.rglob("3703110.fits"))).healpix


@pytest.mark.parametrize("drop, missing", [(("obsid",), "obsid"), (("ra", "ra_obs"), "ra/dec"),
                                           (("planid",), "planid")])
def test_a_catalogue_without_the_columns_is_one_clear_error(tree, tmp_path, drop, missing):
    root, rows = tree
    cat = write_catalog(tmp_path / "c.fits", rows, drop=drop)
    with pytest.raises(ConfigError, match=f"lacks the column.*{missing}") as exc:
        lc.discover_with_catalog([root], cat)
    assert "\n" not in str(exc.value)
    (tmp_path / "not.fits").write_text("not a FITS file")
    with pytest.raises(ConfigError, match="cannot be read"):
        lc.discover_with_catalog([root], tmp_path / "not.fits")


def test_rows_are_read_in_pieces(tree, tmp_path, monkeypatch):
    root, rows = tree
    cat = write_catalog(tmp_path / "c.fits", rows)
    whole = lc.discover_with_catalog([root], cat)
    monkeypatch.setattr(lc, "ROWS_PER_READ", 2)
    pieces = lc.discover_with_catalog([root], cat)
    assert [(e.path, e.healpix) for e in pieces.entries] == [(e.path, e.healpix) for e in whole.entries]
