"""The reader registry: discovery's claims, the one read loop, the arms read and the star selection."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from catalog_tool.io import desi, lamost, readers
from catalog_tool.io.entry import FileEntry
from catalog_tool.io.fitsutil import open_fits
from catalog_tool.preprocess.chain import needed_observed_range, preprocess_batch
from catalog_tool.preprocess.grid import ModelGrid
from catalog_tool.preprocess.settings import PreprocessSettings
from catalog_tool.select import is_star

EDR = "coadd-sv3-dark-26065.fits"
SPECIAL = "coadd-special-dark-27247.fits"
DR10 = "dr10-3706103.fits"
DR7 = "dr7-spec-56286-HD100408N031203B04_sp08-071.fits"


def _entry(kind, path):
    return FileEntry(path=str(path), kind=kind, survey="", program="", healpix=0, nspec=1, nbytes=0, layout="")


def test_claims_and_catch_all(realdata):
    with open_fits(realdata / "desi" / EDR) as fits:
        r, what, reason = readers.claim(fits)
    assert (r.kind, what, reason) == ("desi", "read", None)
    with open_fits(realdata / "desi" / "redrock-special-dark-27247.fits") as fits:
        assert readers.claim(fits)[1:] == ("companion", None)
    with open_fits(realdata / "lamost" / DR10) as fits:
        assert readers.claim(fits) is None  # LAMOST files have no HDU of their own to tell them by
    assert readers.catch_all().kind == "lamost"
    assert [r.kind for r in readers.READERS] == ["desi", "lamost"]
    with pytest.raises(ValueError, match="no reader for files of kind 'apogee'"):
        readers.reader("apogee")


def test_read_groups_one_group_per_coadd_then_all_lamost_files_together(realdata, tmp_path):
    bad = tmp_path / "coadd-broken.fits"
    bad.write_bytes((realdata / "desi" / EDR).read_bytes()[:50_000])
    lam_bad = tmp_path / "not-lamost.fits"
    lam_bad.write_text("not FITS\n")
    entries = [_entry("lamost", realdata / "lamost" / DR10), _entry("desi", realdata / "desi" / SPECIAL),
               _entry("lamost", lam_bad), _entry("desi", bad), _entry("desi", realdata / "desi" / EDR),
               _entry("lamost", realdata / "lamost" / DR7)]
    groups = list(readers.read_groups(entries))
    # DESI first (one file per group, in the order given), then every LAMOST file in one group
    assert [(r.kind, [os.path.basename(b.meta["SOURCE"][0]) for b in batches], [os.path.basename(p) for p, _ in f])
            for r, batches, f in groups] == [
        ("desi", [SPECIAL], []), ("desi", [], ["coadd-broken.fits"]), ("desi", [EDR], []),
        ("lamost", [DR10], ["not-lamost.fits"])]
    lam = groups[-1][1][0]
    assert len(lam) == 2 and [os.path.basename(s) for s in lam.meta["SOURCE"]] == [DR10, DR7]
    # a plan's JSON entries (dicts) are read the same way
    as_dicts = [{"kind": e.kind, "path": e.path} for e in entries[:2]]
    assert [r.kind for r, _, _ in readers.read_groups(as_dicts)] == ["desi", "lamost"]
    with pytest.raises(ValueError, match="kind 'sdss'"):
        list(readers.read_groups([_entry("sdss", bad)]))


@pytest.mark.parametrize("lsf_match_R", [None, 1800.0])
def test_arms_read_give_the_whole_spectrum_result_for_stars_up_to_3000_kms(realdata, lsf_match_R):
    """In the rest frame, a star at z = +0.009 needs R-arm pixels (margins included); the arms
    read_groups reads for preprocessing's range give exactly what the whole spectrum gives, and
    the B arm alone (what the pipeline read before) does not."""
    settings = PreprocessSettings(rest_frame=True, lsf_match_R=lsf_match_R)
    grid = ModelGrid()
    path = realdata / "desi" / EDR
    z = np.array([0.0, 0.009, -0.009, 0.006, 0.01])

    def prepared(batch):
        batch.meta["Z"][:] = z
        return preprocess_batch(batch, grid=grid, settings=settings)

    (_, (batch,), _), = readers.read_groups([_entry("desi", path)],
                                            wave_range=needed_observed_range(grid=grid, settings=settings))
    assert list(batch.arms) == ["B", "R"]
    got, whole = prepared(batch), prepared(desi.read_coadd(path))
    np.testing.assert_array_equal(got.flux, whole.flux)
    np.testing.assert_array_equal(got.ivar, whole.ivar)
    for k in whole.diagnostics:
        np.testing.assert_array_equal(got.diagnostics[k], whole.diagnostics[k], err_msg=k)
    b_only = prepared(desi.read_coadd(path, arms=("B",)))
    assert not (np.array_equal(b_only.flux, whole.flux) and np.array_equal(b_only.ivar, whole.ivar))


def test_observed_frame_models_read_the_b_arm_only(realdata):
    wave_range = needed_observed_range(grid=ModelGrid(), settings=PreprocessSettings())
    (_, (batch,), _), = readers.read_groups([_entry("desi", realdata / "desi" / EDR)], wave_range=wave_range)
    assert list(batch.arms) == ["B"]
    (_, (every,), _), = readers.read_groups([_entry("desi", realdata / "desi" / EDR)])
    assert list(every.arms) == ["B", "R", "Z"]


def test_star_selection_is_the_readers():
    fiber = np.array(["target"] * 5 + ["sky"])
    desi_meta = {"TARGETID": np.arange(6), "FIBER_KIND": fiber,
                 "SPECTYPE": np.array(["STAR ", "GALAXY", "", "", "QSO", "STAR"]),
                 "MWS_TARGET": np.array([0, 4, 2, 0, 8, 2])}
    # redrock wins; MWS targets count where redrock says nothing; the sky fibre is never a star
    np.testing.assert_array_equal(desi.select_stars(desi_meta), [True, False, True, False, False, True])
    np.testing.assert_array_equal(is_star(desi_meta, kind="desi"), [True, False, True, False, False, False])
    lam_meta = {"TARGETID": np.arange(3), "FIBER_KIND": np.array(["target", "target", "sky"]),
                "CLASS": np.array([b"STAR", b"GALAXY", b"STAR"])}
    np.testing.assert_array_equal(is_star(lam_meta, kind="lamost"), [True, False, False])
    # each survey's rule reads its own columns: a LAMOST batch judged as DESI has no star
    assert not is_star(lam_meta, kind="desi").any()
    np.testing.assert_array_equal(lamost.select_stars({"TARGETID": np.arange(2)}), [False, False])


def test_discovery_asks_the_readers(realdata, tmp_path):
    from catalog_tool.io.release import discover

    for name in (EDR, "redrock-special-dark-27247.fits", SPECIAL):
        shutil.copy(realdata / "desi" / name, tmp_path / name)
    shutil.copy(realdata / "lamost" / DR10, tmp_path / DR10)
    (tmp_path / "junk.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    idx = discover([tmp_path])
    assert sorted((e.kind, os.path.basename(e.path)) for e in idx.entries) == [
        ("desi", SPECIAL), ("desi", EDR), ("lamost", DR10)]
    assert idx.companions == 1
    # nobody claims the junk: the catch-all reader's scanner says why it cannot be used
    assert [os.path.basename(p) for p, _ in idx.skipped] == ["junk.fits"]
