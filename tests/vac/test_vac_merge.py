"""Merging part files (streaming, ordered, PRIMARY across parts) and per-pixel files."""

from __future__ import annotations

import os

import fitsio
import numpy as np
import pytest

from catalog_tool.vac import datamodel as dm
from catalog_tool.vac import flags as fl
from catalog_tool.vac import write as w
from vac_factory import assert_tables_equal, expected_order, make_columns, provenance


@pytest.fixture
def parts(tmp_path, rng):
    """Three part files; part 1 holds smaller pixels than part 0, targets repeat across parts."""
    specs = [(13, (11, 40000)), (9, (3, 7, 11)), (0, (5,)), (17, (3, 11, 600))]
    paths, tables, extras = [], [], []
    for i, (n, pixels) in enumerate(specs):
        cols = make_columns(n, rng, targetid_pool=12, pixels=pixels)
        extra = np.zeros(n, dtype=[("PART", "i2"), ("ROW", "i4")])
        extra["PART"], extra["ROW"] = i, np.arange(n)
        path = tmp_path / "work" / f"part-{i:05d}.fits"
        errors = [(f"release/bad-{i}.fits", "truncated")] if i in (1, 3) else []
        w.write_vac(path, cols, provenance=provenance(), errors=errors, extras={"FIT": extra},
                    compute_primary=False)
        paths.append(path)
        stored = dm.to_table(cols)[expected_order(cols["HEALPIX"])]  # as stored in the part
        stored["FLAG_BAD"] = fl.flag_bad(stored["FLAGS"])
        tables.append(stored)
        extras.append(extra[expected_order(cols["HEALPIX"])])
    return paths, tables, extras


def test_merge_orders_rows_and_computes_primary_across_parts(parts, tmp_path):
    paths, tables, extras = parts
    out = tmp_path / "vac.fits"
    res = w.merge_parts(paths, out, provenance=provenance(), errors=[("release/plan.fits", "no such file")],
                        chunk_rows=5)
    allrows = np.concatenate(tables)
    order = expected_order(allrows["HEALPIX"])
    want = allrows[order]
    got = w.read_vac(out)
    assert res.nrows == len(got) == 39 and res.nparts == 4
    assert_tables_equal(got, want, skip=("PRIMARY",))
    # pixel 3 of part 1 comes before pixel 11 of part 0: parts really were interleaved
    assert got["HEALPIX"][0] == 3 and np.all(np.diff(got["HEALPIX"]) >= 0)
    primary = w.primary_mask(targetid=want["TARGETID"], survey=want["SURVEY"], snr=want["SNR"])
    np.testing.assert_array_equal(got["PRIMARY"], primary)
    assert res.nprimary == primary.sum() < len(got)  # duplicates across parts exist
    # a target seen in two parts has its PRIMARY on the best-S/N row, whichever part holds it
    desi = np.char.strip(got["SURVEY"]) != b"lamost"
    tids, counts = np.unique(got["TARGETID"][desi], return_counts=True)
    multi = tids[counts > 1]
    assert len(multi) > 0
    for tid in multi:
        rows = got[desi & (got["TARGETID"] == tid)]
        assert rows["PRIMARY"].sum() == 1
    # extras follow the same order; errors are the given ones then the parts'
    fit = fitsio.read(out, ext="FIT")
    np.testing.assert_array_equal(fit["PART"], np.concatenate(extras)["PART"][order])
    np.testing.assert_array_equal(fit["ROW"], np.concatenate(extras)["ROW"][order])
    assert w.read_errors(out) == [("release/plan.fits", "no such file"), ("release/bad-1.fits", "truncated"),
                                  ("release/bad-3.fits", "truncated")]


def test_merge_equals_single_write(parts, tmp_path):
    """Merging the parts gives the same catalogue as writing all rows at once."""
    paths, tables, extras = parts
    merged = w.merge_parts(paths, tmp_path / "merged.fits", provenance=provenance(), chunk_rows=7).path
    whole = w.write_vac(tmp_path / "whole.fits", np.concatenate(tables), provenance=provenance())
    assert_tables_equal(w.read_vac(merged), w.read_vac(whole))
    h1, h2 = fitsio.read_header(merged, ext=1), fitsio.read_header(whole, ext=1)
    for key in ("MODEL", "MODELSHA", "COMMAND", "DATE", "FLAGB3", "TCOMM7"):
        assert h1[key] == h2[key]


def test_merge_refuses_bad_parts(parts, tmp_path):
    paths, _, _ = parts
    junk = tmp_path / "junk.fits"
    junk.write_text("not fits")
    with pytest.raises(w.PartFileError, match="junk.fits"):
        w.merge_parts([paths[0], junk], tmp_path / "v.fits", provenance=provenance())
    with pytest.raises(w.PartFileError, match="missing.fits"):
        w.merge_parts([tmp_path / "missing.fits"], tmp_path / "v.fits", provenance=provenance())
    other = tmp_path / "other.fits"
    fitsio.write(other, np.zeros(2, dtype=[("TARGETID", "i8")]), extname=dm.EXTNAME)
    with pytest.raises(w.PartFileError, match="columns differ"):
        w.merge_parts([other], tmp_path / "v.fits", provenance=provenance())
    no_extra = tmp_path / "noextra.fits"
    w.write_vac(no_extra, dm.empty_table(0), provenance=provenance())
    with pytest.raises(w.PartFileError, match="extra HDUs"):
        w.merge_parts([paths[0], no_extra], tmp_path / "v.fits", provenance=provenance())
    assert not (tmp_path / "v.fits").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_merge_of_nothing(tmp_path):
    res = w.merge_parts([], tmp_path / "v.fits", provenance=provenance())
    assert res.nrows == 0 and len(w.read_vac(res.path)) == 0


def test_per_pixel_files_in_desi_layout(parts, tmp_path):
    paths, tables, _ = parts
    merged = w.merge_parts(paths, tmp_path / "vac.fits", provenance=provenance()).path
    written = w.write_per_pixel(merged, tmp_path / "out")
    full = w.read_vac(merged)
    keys = {(s.decode(), p.decode(), int(h)) for s, p, h in zip(full["SURVEY"], full["PROGRAM"], full["HEALPIX"])}
    assert len(written) == len(keys)
    expected = {os.path.join(tmp_path, "out", "healpix", s, p, str(h // 100), str(h), f"stxcat-{s}-{p}-{h}.fits")
                for s, p, h in keys}
    assert set(written) == expected
    assert ("main", "dark", 40000) in keys  # the fixture has a five-digit pixel
    assert os.path.join(tmp_path, "out", "healpix", "main", "dark", "400", "40000",
                        "stxcat-main-dark-40000.fits") in expected
    pieces = np.concatenate([w.read_vac(p) for p in written])
    # same rows, PRIMARY kept from the merged catalogue, each file homogeneous
    back = pieces[np.lexsort((pieces["SOURCE_ROW"], pieces["TARGETID"], pieces["HEALPIX"]))]
    ref = full[np.lexsort((full["SOURCE_ROW"], full["TARGETID"], full["HEALPIX"]))]
    assert_tables_equal(back, ref)
    for p in written:
        t = w.read_vac(p)
        assert len(np.unique(t["HEALPIX"])) == 1 and len(np.unique(t["SURVEY"])) == 1
        assert fitsio.read_header(p, ext=0)["COMMAND"] == provenance().command
    with pytest.raises(w.OutputExistsError):
        w.write_per_pixel(merged, tmp_path / "out")


def test_per_pixel_path_rejects_unsafe_names(tmp_path):
    assert w.per_pixel_path("o", survey="sv3", program="bright", pixel=1234) == os.path.join(
        "o", "healpix", "sv3", "bright", "12", "1234", "stxcat-sv3-bright-1234.fits")
    assert w.per_pixel_path("o", survey="lamost", program="", pixel=5).endswith("stxcat-lamost-unknown-5.fits")
    with pytest.raises(dm.DataModelError, match="file name"):
        w.per_pixel_path("o", survey="../etc", program="dark", pixel=1)
