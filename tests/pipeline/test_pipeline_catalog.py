"""annotate/plan --catalog: a LAMOST release planned from its survey catalogue."""

from __future__ import annotations

import json
import os

import fitsio
import numpy as np
import pytest

from catalog_tool.errors import RunStateError
from catalog_tool.sim.lamost import CATALOG_NAME
from catalog_tool.vac.flags import FLAG_BITS
from pipeline_helpers import LABELS, read_table, run_annotate, stxcat

FILE_MISSING = next(f.value for f in FLAG_BITS if f.name == "FILE_MISSING")


@pytest.fixture
def tree(tmp_path, lamost_release):
    """The simulated files linked into a new tree, one of them left out, one not in the catalogue."""
    root = tmp_path / "lrs"
    truth = fitsio.read(lamost_release.truth)
    files = [f.strip() for f in truth["FILE"].astype(str)]
    for f in files[1:]:
        dst = root / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.join(lamost_release.out, f), dst)
    extra = root / "spectra" / "spec-59000-EXTRA_sp01-001.fits"
    os.symlink(os.path.join(lamost_release.out, files[1]), extra)
    return root, os.path.join(lamost_release.out, CATALOG_NAME), files[0], extra


def test_every_catalogue_row_reaches_the_vac(tmp_path, tree, tiny_bundle):
    root, cat, gone, extra = tree
    catalog = fitsio.read(cat)
    summary = run_annotate([root], tmp_path / "cat.fits", tiny_bundle, catalog=cat)
    vac = read_table(tmp_path / "cat.fits")
    assert len(vac) == len(catalog)  # one row per catalogue row, the missing file's too
    source = np.char.strip(vac["SOURCE"].astype(str))
    missing = source == os.path.basename(gone).removesuffix(".gz")
    assert missing.sum() == 1
    row = vac[missing][0]
    assert row["FLAGS"] == FILE_MISSING and row["FLAG_BAD"]
    assert all(np.isnan(row[name]) and np.isnan(row[f"{name}_ERR"]) for name in LABELS)
    assert row["TARGETID"] == catalog["obsid"][0]
    assert (row["TARGET_RA"], row["TARGET_DEC"]) == (catalog["ra"][0], catalog["dec"][0])
    # a row, not a failed file: nothing in ERRORS; the extra file is listed, not read
    assert not summary.failed_files and summary.missing == 1
    assert summary.unlisted == [os.fspath(extra)]
    assert os.path.basename(extra) not in set(source)
    log = (tmp_path / "cat.fits.work" / "stxcat.log").read_text()
    assert f"not in the catalogue, not read: {extra}" in log

    # the files found give the rows a run without the catalogue gives them
    os.remove(extra)
    run_annotate([root], tmp_path / "plain.fits", tiny_bundle)
    plain = read_table(tmp_path / "plain.fits")
    found = vac[~missing]
    order = np.argsort(found["SOURCE"]), np.argsort(plain["SOURCE"])
    for name in ("SOURCE", "HEALPIX", "FEH", "FEH_ERR", "TEFF", "FLAGS", "SNR"):
        a, b = found[name][order[0]], plain[name][order[1]]
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name


def test_plan_and_annotate_command_lines(tmp_path, tree, tiny_bundle):
    root, cat, gone, extra = tree
    res = stxcat("plan", root, "--catalog", cat)
    assert res.returncode == 0, res.stderr
    assert "1 catalogue rows name files not under the inputs" in res.stdout
    assert "1 files under the inputs are not in the catalogue" in res.stdout
    res = stxcat("plan", root, "--catalog", cat, "--json")
    plan = json.loads(res.stdout)
    assert plan["catalog"]["missing"] == 1 and plan["catalog"]["unlisted"] == [os.fspath(extra)]
    assert sum(p["nspec"] for p in plan["partitions"]) == len(fitsio.read(cat))

    out = tmp_path / "vac.fits"
    res = stxcat("annotate", root, "--catalog", cat, "--out", out, "--model", tiny_bundle, "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "1 file(s) under the inputs are not in the catalogue and were not read" in res.stderr
    assert "1 catalogue row(s) name files that are not under the inputs" in res.stderr
    assert "FILE_MISSING 1" in res.stdout
    res = stxcat("annotate", root, "--catalog", tmp_path / "nope.fits", "--out", out, "--model", tiny_bundle)
    assert res.returncode != 0 and "is not a file" in res.stderr


def test_resume_checks_the_catalogue(tmp_path, tree, tiny_bundle):
    root, cat, gone, extra = tree
    out = tmp_path / "vac.fits"
    run_annotate([root], out, tiny_bundle, catalog=cat)
    again = run_annotate([root], out, tiny_bundle, catalog=cat, resume=True)
    assert again.partitions_skipped == again.partitions
    changed = tmp_path / "changed.fits"
    data = fitsio.read(cat)
    fitsio.write(os.fspath(changed), data[1:], clobber=True)
    with pytest.raises(RunStateError):
        run_annotate([root], out, tiny_bundle, catalog=changed, resume=True)
