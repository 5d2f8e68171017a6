"""Release discovery, partitions and ``stxcat plan`` on small trees built from the real files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from catalog_tool.cli import main
from catalog_tool.errors import ConfigError
from catalog_tool.io import release
from catalog_tool.io.release import FileEntry

EDR = "coadd-sv3-dark-26065.fits"
SPECIAL = "coadd-special-dark-27247.fits"
TILE = "coadd-4-80613-thru20210324.fits"


def _link(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)
    return dst


@pytest.fixture
def tree(realdata, tmp_path):
    """A DESI production folder (healpix/ and tiles/) plus a LAMOST folder and bad files."""
    desi = realdata / "desi"
    root = tmp_path / "iron"
    hp = root / "healpix"
    _link(desi / EDR, hp / "sv3" / "dark" / "260" / "26065" / EDR)
    _link(desi / SPECIAL, hp / "special" / "dark" / "272" / "27247" / SPECIAL)
    _link(desi / "redrock-special-dark-27247.fits",
          hp / "special" / "dark" / "272" / "27247" / "redrock-special-dark-27247.fits")
    _link(desi / TILE, root / "tiles" / "cumulative" / "80613" / "20210324" / TILE)
    # a truncated coadd, a non-FITS file with a FITS name, and a file that is not considered
    bad = hp / "sv3" / "dark" / "260" / "26066" / "coadd-sv3-dark-26066.fits"
    bad.parent.mkdir(parents=True)
    bad.write_bytes((desi / EDR).read_bytes()[:100_000])
    (hp / "sv3" / "dark" / "notes.fits").write_text("not a fits file\n")
    (hp / "README.txt").write_text("ignored: not a FITS name\n")
    lam = tmp_path / "lamost"
    for p in sorted((realdata / "lamost").glob("dr10-*.fits"))[:2]:
        _link(p, lam / "sub" / p.name)
    return root, lam, bad


def test_discover_release_tree(tree):
    root, _, bad = tree
    idx = release.discover([root])
    assert [os.path.basename(e.path) for e in idx.entries] == [EDR, SPECIAL]  # sorted by pixel
    assert [e.healpix for e in idx.entries] == [26065, 27247]
    assert [e.nspec for e in idx.entries] == [5, 1]
    assert idx.nspec == 6 and idx.pixels == [26065, 27247]
    assert idx.companions == 1  # the redrock file: read with its coadd, not an error
    reasons = dict(idx.skipped)
    assert set(reasons) == {str(bad), str(root / "healpix" / "sv3" / "dark" / "notes.fits")}
    assert "truncated" in reasons[str(bad)]
    assert "not a FITS file" in reasons[str(root / "healpix" / "sv3" / "dark" / "notes.fits")]
    assert any("tiles/" in note for note in idx.notes)  # tile coadds duplicate healpix ones


def test_a_coadd_cut_at_an_hdu_boundary_is_skipped_not_taken_for_a_companion(realdata, tmp_path):
    """CFITSIO sees a file cut exactly after an HDU as a shorter, valid file: structure tells."""
    import fitsio

    src = realdata / "desi" / SPECIAL
    with fitsio.FITS(str(src)) as fits:
        ends = {h.get_extname(): h.get_offsets()["data_end"] for h in fits}
    for ext in ("FIBERMAP", "EXP_FIBERMAP", "B_WAVELENGTH", "B_MASK"):
        cut = tmp_path / ext / SPECIAL
        cut.parent.mkdir()
        cut.write_bytes(src.read_bytes()[: -(-ends[ext] // 2880) * 2880])
        idx = release.discover([cut])
        assert idx.entries == [] and idx.companions == 0, ext
        [(path, reason)] = idx.skipped
        assert path == str(cut) and "is missing" in reason and "cut-short coadd" in reason, reason


def test_an_unforeseen_error_while_scanning_skips_that_file_only(realdata, tmp_path, monkeypatch):
    import dataclasses

    from catalog_tool.io import readers

    real = readers.reader("desi").scan

    def scan(path):
        if os.path.basename(path) == SPECIAL:
            raise ValueError("a header value\nno check foresaw")
        return real(path)

    monkeypatch.setattr(readers, "READERS", tuple(dataclasses.replace(r, scan=scan) if r.kind == "desi" else r
                                                  for r in readers.READERS))
    idx = release.discover([realdata / "desi" / SPECIAL, realdata / "desi" / EDR])
    assert [os.path.basename(e.path) for e in idx.entries] == [EDR]
    assert idx.skipped == [(str(realdata / "desi" / SPECIAL),
                            "cannot be scanned (ValueError: a header value no check foresaw)")]


def test_discover_tiles_lamost_files_and_duplicates(tree, realdata):
    root, lam, _ = tree
    tile = root / "tiles" / "cumulative" / "80613" / "20210324" / TILE
    idx = release.discover([root / "tiles", lam, tile, root / "missing"])
    kinds = sorted((e.kind, e.layout) for e in idx.entries)
    assert kinds == [("desi", "tile"), ("lamost", "dr10"), ("lamost", "dr10")]  # tile indexed once
    assert [e.healpix for e in idx.entries] == sorted(e.healpix for e in idx.entries)
    tile_entry = next(e for e in idx.entries if e.kind == "desi")
    assert (tile_entry.survey, tile_entry.healpix, tile_entry.nspec) == ("sv1", 7108, 1)
    assert idx.skipped == [(str(root / "missing"), "no such file or directory")]


def test_uncoadded_spectra_file_is_skipped(realdata, tmp_path):
    import fitsio

    path = tmp_path / "spectra-sv3-dark-1.fits"
    with fitsio.FITS(str(path), "rw") as out:
        out.write(None)
        out.write(np.zeros(2, dtype=[("TARGETID", "i8"), ("TARGET_RA", "f8"), ("TARGET_DEC", "f8"),
                                     ("EXPID", "i4")]), extname="FIBERMAP")
        out.write(np.zeros((2, 3), dtype="f4"), extname="B_FLUX")
    idx = release.discover([path])
    assert idx.entries == [] and "uncoadded" in idx.skipped[0][1]


def _entries(spec):
    return [FileEntry(f"/d/f{i}.fits", "desi", "main", "dark", pix, n, 1000 * n, "healpix")
            for i, (pix, n) in enumerate(spec)]


def test_partition_keeps_pixels_whole_and_near_target():
    entries = _entries([(5, 40), (1, 30), (1, 30), (9, 50), (12, 500), (20, 10), (21, 15)])
    parts = release.partition(entries, target_spectra=100)
    assert [p.pixels for p in parts] == [(1, 5), (9,), (12,), (20, 21)]
    assert [p.nspec for p in parts] == [100, 50, 500, 25]
    assert [p.index for p in parts] == [0, 1, 2, 3]
    for p in parts:
        assert p.nspec == sum(e.nspec for e in p.files)
        assert p.nbytes == 1000 * p.nspec
    # every file exactly once, each pixel in one partition only
    assert sorted(e.path for p in parts for e in p.files) == sorted(e.path for e in entries)
    owners = {}
    for p in parts:
        for e in p.files:
            owners.setdefault(e.healpix, set()).add(p.index)
    assert all(len(v) == 1 for v in owners.values())


def test_partition_one_big_partition_and_bad_size():
    entries = _entries([(3, 2), (1, 2), (2, 2)])
    parts = release.partition(entries, target_spectra=1000)
    assert len(parts) == 1 and parts[0].pixels == (1, 2, 3)
    assert release.partition([], target_spectra=10) == []
    with pytest.raises(ConfigError):
        release.partition(entries, target_spectra=0)


def test_healpix_helpers():
    pix = release.radec_to_healpix(ra=np.array([216.9042, np.nan, 10.0, 370.0]),
                                   dec=np.array([3.2973, 0.0, 95.0, 5.0]))
    assert pix.dtype == np.int32
    assert pix[0] == 26065 and pix[1] == -1 and pix[2] == -1
    assert pix[3] == release.radec_to_healpix(ra=np.array([10.0]), dec=np.array([5.0]))[0]
    # a field across RA = 0: the mean direction is near RA 0, not RA 180
    across = release.pixel_of_targets(ra=np.array([359.9, 0.1]), dec=np.array([1.0, 1.0]))
    assert across == release.radec_to_healpix(ra=np.array([0.0]), dec=np.array([1.0]))[0]
    assert release.pixel_of_targets(ra=np.array([np.nan]), dec=np.array([0.0])) == -1


def test_cli_plan_table(tree):
    root, lam, bad = tree
    result = CliRunner().invoke(main, ["plan", str(root), str(lam), "--partition-size", "4"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "part" in out and "spectra" in out and "total" in out
    assert "4 files, 8 spectra, 4 HEALPix pixels" in out
    assert f"{bad}: truncated" in out
    assert "skipped 2 files" in out
    assert "sv3/dark: 1 files, 5 spectra" in out
    assert "1 companion files" in out


def test_cli_plan_json(tree):
    root, lam, bad = tree
    result = CliRunner().invoke(main, ["plan", str(root), str(lam), "--partition-size", "4", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    totals = plan["totals"]
    assert (totals["files"], totals["spectra"], totals["pixels"], totals["skipped"]) == (4, 8, 4, 2)
    assert totals["bytes"] == sum(f["nbytes"] for p in plan["partitions"] for f in p["files"])
    pixels = [px for p in plan["partitions"] for px in p["pixels"]]
    assert pixels == sorted(pixels)
    edr = next(f for p in plan["partitions"] for f in p["files"] if f["path"].endswith(EDR))
    assert (edr["survey"], edr["program"], edr["healpix"], edr["nspec"], edr["layout"]) == (
        "sv3", "dark", 26065, 5, "healpix")
    assert {s["path"] for s in plan["skipped"]} >= {str(bad)}


def test_cli_plan_nothing_usable_is_one_line(tmp_path):
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"\x00" * 100)
    result = CliRunner().invoke(main, ["plan", str(junk)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "no usable spectra" in result.output
    assert f"{junk}: not a FITS file" in result.output


def test_plain_tables_are_listed_not_failed(tmp_path, realdata):
    import shutil

    import fitsio

    lam = tmp_path / "lamost"
    lam.mkdir()
    shutil.copy(realdata / "lamost" / "dr10-3703110.fits", lam)
    cat = lam / "catalogue.fits"
    fitsio.write(str(cat), np.zeros(3, dtype=[("OBSID", "i8"), ("FEH", "f4")]), extname="CATALOGUE")
    idx = release.discover([lam])
    assert [os.path.basename(e.path) for e in idx.entries] == ["dr10-3703110.fits"]
    assert idx.skipped == []
    assert idx.tables == [str(cat)]
    assert "catalogue.fits" in release.format_plan(idx, release.partition(idx.entries, target_spectra=10))
    assert release.plan_to_dict(idx, [])["totals"]["tables"] == 1


def test_discovery_in_processes_gives_the_same_index(tree, realdata, tmp_path):
    """Scanning in spawned processes (large releases) indexes exactly what one process does:
    entries, skipped files and reasons, companions, tables, notes, in the same order."""
    root, lam, _ = tree
    for p in sorted((realdata / "lamost").iterdir()):  # every real LAMOST layout, plain and gzip
        _link(p, lam / "all" / p.name)
    (lam / "broken.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    inputs = [root, root / "tiles", lam, lam / "sub"]  # lam/sub reached twice: indexed once
    one = release.discover(inputs, workers=1)
    two = release.discover(inputs, workers=2)
    # healpix, tiles, the 9 LAMOST files (lam/sub links to two of them: the same real files)
    assert len(one.entries) == 2 + 1 + 9 and one.skipped and one.companions == 1
    assert two.entries == one.entries
    assert two.skipped == one.skipped
    assert (two.companions, two.tables, two.notes) == (one.companions, one.tables, one.notes)


def test_scan_workers_and_a_failed_pool(tree, monkeypatch):
    assert release.scan_workers(10) == 1
    from catalog_tool.config import available_cpus

    assert release.scan_workers(release.PARALLEL_SCAN_MIN_FILES) == min(available_cpus(), release.MAX_SCAN_WORKERS)
    assert release.scan_workers(10, 3) == 3
    with pytest.raises(ConfigError):
        release.scan_workers(10, 0)
    import concurrent.futures

    class Broken:
        def __init__(self, *a, **k):
            raise concurrent.futures.process.BrokenProcessPool("a scan process was killed")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Broken)
    root, _, _ = tree
    idx = release.discover([root], workers=2)
    assert [os.path.basename(e.path) for e in idx.entries] == [EDR, SPECIAL]  # scanned here instead
    assert any("scanning in 2 processes failed" in n and "killed" in n for n in idx.notes)


def test_discovery_inside_a_daemonic_process_scans_in_that_process(tree):
    """A multiprocessing.Pool worker (daemonic) may not start processes: discovery does not try."""
    import multiprocessing

    root, _, _ = tree
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        idx = pool.apply(release.discover, ([root],), {"workers": 2})
    assert [os.path.basename(e.path) for e in idx.entries] == [EDR, SPECIAL]
    assert not any("processes failed" in n for n in idx.notes)
