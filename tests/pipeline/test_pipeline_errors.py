"""Bad inputs: recorded in the ERRORS table and the log with exit status 3, or --strict stops;
the real DESI and LAMOST files annotate without crashing."""

from __future__ import annotations

import os
import pathlib
import shutil

import fitsio
import numpy as np
import pytest
from click.testing import CliRunner

from catalog_tool.cli import EXIT_SOME_FILES_FAILED, main
from catalog_tool.errors import InputFileError
from catalog_tool.pipeline.partition import process_files
from catalog_tool.vac.flags import FLAG_BITS
from catalog_tool.vac.write import read_errors
from pipeline_helpers import LABELS, read_table, run_annotate

NOT_STAR = 1 << next(b.bit for b in FLAG_BITS if b.name == "NOT_STAR")


@pytest.fixture
def damaged_release(tmp_path, desi_release):
    """A copy of the release with one coadd cut in half and a garbage file named like a coadd."""
    rel = tmp_path / "rel"
    shutil.copytree(desi_release.out, rel)
    coadds = sorted(rel.rglob("coadd-*.fits"))
    truncated = coadds[1]
    size = truncated.stat().st_size
    with open(truncated, "r+b") as fh:
        fh.truncate(size // 2)
    garbage = rel / "healpix" / "main" / "bright" / "999" / "99999" / "coadd-main-bright-99999.fits"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(np.random.default_rng(5).bytes(20000))
    return rel, truncated, garbage


def test_bad_files_are_recorded_and_the_rest_annotated(tmp_path, damaged_release, tiny_bundle, reference_vac):
    rel, truncated, garbage = damaged_release
    out = tmp_path / "vac.fits"
    res = CliRunner().invoke(main, ["annotate", str(rel), "--out", str(out), "--model", tiny_bundle,
                                    "--partition-size", "30", "--no-progress"])
    assert res.exit_code == EXIT_SOME_FILES_FAILED == 3, res.output
    assert "2 input file(s) could not be read" in res.output
    errors = fitsio.read(str(out), ext="ERRORS")
    paths = [os.path.basename(str(p).strip()) for p in errors["FILE"]]
    assert sorted(paths) == sorted([truncated.name, garbage.name])
    reasons = " ".join(str(r) for r in errors["REASON"])
    assert "truncated" in reasons and "not a FITS file" in reasons
    log = (tmp_path / "vac.fits.work" / "stxcat.log").read_text()
    assert truncated.name in log and garbage.name in log
    # the two readable pixels are annotated exactly as in the clean run
    vac, ref = read_table(out), read_table(reference_vac)
    bad_pixel = int(truncated.parent.name)
    keep = ref["HEALPIX"] != bad_pixel
    assert 0 < keep.sum() < len(ref)
    assert np.array_equal(vac["TARGETID"], ref["TARGETID"][keep])
    assert np.array_equal(vac["FEH"], ref["FEH"][keep], equal_nan=True)


def test_strict_stops_at_the_first_bad_file(tmp_path, damaged_release, tiny_bundle):
    rel, _, _ = damaged_release
    out = tmp_path / "vac.fits"
    res = CliRunner().invoke(main, ["annotate", str(rel), "--out", str(out), "--model", tiny_bundle,
                                    "--strict", "--no-progress"])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "(--strict)" in lines[0] and "Traceback" not in res.output, res.output
    assert not out.exists()


def test_partition_records_a_file_that_fails_at_read_time(tmp_path, desi_release, tiny_bundle):
    """A file that passed discovery but cannot be read when its partition runs (e.g. damaged since)."""
    from catalog_tool.models.bundle import load_bundle

    bundle = load_bundle(tiny_bundle)
    good, bad_src = sorted(str(p) for p in pathlib.Path(desi_release.out).rglob("coadd-*.fits"))[:2]
    bad = tmp_path / os.path.basename(bad_src)
    data = open(bad_src, "rb").read()
    bad.write_bytes(data[: len(data) // 3])
    files = [{"path": str(bad), "kind": "desi"}, {"path": good, "kind": "desi"}]
    table, failures, counts = process_files(files, bundle=bundle, device="cpu", batch_size=64)
    assert [os.path.basename(p) for p, _ in failures] == [bad.name]
    assert len(table) == counts["targets"] > 0
    assert set(np.char.decode(table["SOURCE"]).tolist()) == {os.path.basename(good)}
    with pytest.raises(InputFileError, match="--strict"):
        process_files(files, bundle=bundle, device="cpu", batch_size=64, strict=True)


def test_real_desi_and_lamost_files(tmp_path, realdata, tiny_bundle):
    out = tmp_path / "real.fits"
    res = CliRunner().invoke(main, ["annotate", str(realdata / "desi"), str(realdata / "lamost"), "--out", str(out),
                                    "--model", tiny_bundle, "--no-progress"])
    assert res.exit_code == 0, res.output
    vac = read_table(out)
    survey = np.char.strip(vac["SURVEY"].astype(str))
    source = np.char.strip(vac["SOURCE"].astype(str))
    # 9 LAMOST files + 2 EDR targets + 1 DR1 tile target + 1 special target; sky/unassigned left out
    assert (survey == "lamost").sum() == 9
    assert len(vac) == 13
    galaxy = source == "coadd-4-80613-thru20210324.fits"
    assert galaxy.sum() == 1
    assert vac["FLAGS"][galaxy][0] & NOT_STAR and np.isnan(vac["FEH"][galaxy][0])
    assert np.char.strip(vac["SPECTYPE"][galaxy].astype(str))[0] == "GALAXY"
    # every LAMOST star gets numbers (the DR1/DR7 files share the model grid's lattice)
    lam_star = (survey == "lamost") & (np.char.strip(vac["CLASS"].astype(str)) == "STAR")
    assert lam_star.sum() >= 8
    for name in LABELS:
        assert np.all(np.isfinite(vac[name][lam_star])), name


def test_device_hand_off_on_cpu_is_a_view_without_pinning():
    """On the CPU the chunk is handed to torch without a copy and without pinned memory (pinning and
    non-blocking copies are for CUDA only; that path is not exercised on a machine without a GPU)."""
    import torch

    from catalog_tool.models.infer import _to_device

    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = _to_device(a, torch.device("cpu"))
    assert t.device.type == "cpu" and not t.is_pinned()
    a[1, 2] = -7.0
    assert t[1, 2].item() == -7.0  # shares memory: no copy on the CPU path


# ---------------------------------------------------------------------------------------------
# the invariant: each target of each file in the VAC once, or the file in ERRORS (issue 14)

def test_merge_refuses_a_vac_that_lost_rows(tmp_path, desi_release, tiny_bundle, monkeypatch):
    from catalog_tool.pipeline import partition
    from catalog_tool.vac.write import LostRowsError

    real = partition.finish_targets
    victim = os.path.basename(sorted(pathlib.Path(desi_release.out).rglob("coadd-*.fits"))[1])

    def lossy(prep, **kw):
        rows = real(prep, **kw)
        mine = np.char.strip(rows["SOURCE"].astype(str)) == victim
        return rows[~mine | (np.cumsum(mine) > 1)]  # the file's first row vanishes

    monkeypatch.setattr(partition, "finish_targets", lossy)
    out = tmp_path / "vac.fits"
    res = CliRunner().invoke(main, ["annotate", desi_release.out, "--out", str(out), "--model", tiny_bundle,
                                    "--partition-size", "30", "--no-progress"])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "refusing to write" in lines[0] and victim in lines[0], res.output
    assert "rows," in lines[0] and "expected" in lines[0]
    assert not out.exists()
    with pytest.raises(LostRowsError):
        run_annotate([desi_release.out], tmp_path / "v2.fits", tiny_bundle)


def test_a_file_neither_annotated_nor_failed_is_refused(tmp_path, desi_release, tiny_bundle, monkeypatch):
    from catalog_tool.pipeline import partition
    from catalog_tool.vac.write import LostRowsError

    real = partition._ledger
    monkeypatch.setattr(partition, "_ledger", lambda *a: ({}, real(*a)[1]))  # a file that leaves no trace
    with pytest.raises(LostRowsError, match="neither annotated nor listed as failed"):
        run_annotate([desi_release.out], tmp_path / "vac.fits", tiny_bundle)
    assert not (tmp_path / "vac.fits").exists()


def test_an_unexpected_error_fails_that_file_only(tmp_path, desi_release, tiny_bundle, reference_vac, monkeypatch):
    from catalog_tool.pipeline import partition

    coadds = sorted(pathlib.Path(desi_release.out).rglob("coadd-*.fits"))
    victim = str(coadds[0])
    real = partition.prepare_targets

    def crashing(batch, **kw):
        if victim in set(np.asarray(batch.meta["SOURCE"]).astype(str)):
            raise RuntimeError("boom\nsecond line")
        return real(batch, **kw)

    monkeypatch.setattr(partition, "prepare_targets", crashing)
    out = tmp_path / "vac.fits"
    res = CliRunner().invoke(main, ["annotate", desi_release.out, "--out", str(out), "--model", tiny_bundle,
                                    "--partition-size", "30", "--no-progress"])
    assert res.exit_code == EXIT_SOME_FILES_FAILED, res.output
    errors = read_errors(out)
    assert [f for f, _ in errors] == [victim]
    reason = errors[0][1]
    assert reason.startswith("could not be processed: RuntimeError: boom second line at ")
    assert "stxcat bug" in reason and "\n" not in reason
    vac, ref = read_table(out), read_table(reference_vac)
    keep = np.char.strip(ref["SOURCE"].astype(str)) != coadds[0].name
    assert np.array_equal(vac["TARGETID"], ref["TARGETID"][keep])
    # --strict: the error itself, not a record of it
    with pytest.raises(RuntimeError, match="boom"):
        from catalog_tool.models.bundle import load_bundle

        process_files([{"path": victim, "kind": "desi"}], bundle=load_bundle(tiny_bundle), device="cpu",
                      batch_size=64, strict=True)


def test_a_file_changed_since_the_plan_fails(desi_release, tiny_bundle):
    from catalog_tool.models.bundle import load_bundle

    path = str(sorted(pathlib.Path(desi_release.out).rglob("coadd-*.fits"))[0])
    table, failures, counts = process_files([{"path": path, "kind": "desi", "nspec": 31}],
                                            bundle=load_bundle(tiny_bundle), device="cpu", batch_size=64)
    assert len(table) == 0 and counts["files"] == {}
    assert failures == [(path, "changed since the run was planned (FIBERMAP has 30 rows, the plan 31): "
                               "run again with --overwrite")]


def test_reading_problems_reach_the_log_the_summary_and_the_vac(tmp_path, desi_release, tiny_bundle):
    from catalog_tool.vac.flags import FLAG_BITS

    no_redrock = next(b.value for b in FLAG_BITS if b.name == "NO_REDROCK")
    rel = tmp_path / "rel"
    shutil.copytree(desi_release.out, rel)
    coadd = sorted(rel.rglob("coadd-*.fits"))[2]
    (coadd.parent / coadd.name.replace("coadd-", "redrock-")).unlink()
    summary = run_annotate([rel], tmp_path / "vac.fits", tiny_bundle)
    assert summary.ok and len(summary.problems) == 1 and "no redrock file" in summary.problems[0]
    log = (tmp_path / "vac.fits.work" / "stxcat.log").read_text()
    assert "problem: " in log and coadd.name in log and "1 reading problems" in log
    vac = read_table(tmp_path / "vac.fits")
    mine = np.char.strip(vac["SOURCE"].astype(str)) == coadd.name
    assert mine.any() and (~mine).any()
    assert np.all(vac["FLAGS"][mine] & no_redrock) and not np.any(vac["FLAGS"][~mine] & no_redrock)
    assert np.all(np.isnan(vac["Z"][mine]))
