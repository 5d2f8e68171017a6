"""Restartable runs: SIGKILL then --resume, refusals of a changed plan or model, --overwrite."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from catalog_tool.cli import main
from catalog_tool.errors import RunStateError, StxcatError
from pipeline_helpers import assert_same_rows, read_table, run_annotate, stxcat


def _markers(parts_dir) -> list[str]:
    return sorted(n for n in os.listdir(parts_dir) if n.startswith("part-") and n.endswith(".done")) if os.path.isdir(parts_dir) else []


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, desi_release6, tiny_bundle):
    npart = 6
    args = ["annotate", desi_release6.out, "--model", tiny_bundle, "--partition-size", "1",
            "--batch-size", "1", "--scheduler", "synchronous", "--no-progress"]
    out = tmp_path / "vac.fits"
    parts = tmp_path / "vac.fits.work" / "parts"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "catalog_tool.cli", *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not _markers(parts):  # kill as soon as the first partition is recorded as done
            assert proc.poll() is None, "the run ended before its first partition was done"
            assert time.monotonic() < deadline, "no partition done in 180 s"
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = _markers(parts)
    assert 1 <= len(done_at_kill) < npart, done_at_kill
    assert not out.exists()

    res = stxcat(*args, "--out", out, "--resume")
    assert res.returncode == 0, res.stderr
    assert f"of {npart} partitions were already done" in res.stdout, res.stdout
    assert len(_markers(parts)) == npart
    assert f"resumed: {len(done_at_kill)} of" in res.stdout

    ref = tmp_path / "ref.fits"
    run_annotate([desi_release6.out], ref, tiny_bundle, partition_size=1, batch_size=1)
    assert_same_rows(read_table(out), read_table(ref))
    assert len(read_table(out)) == len(read_table(ref)) > 0
    log = (tmp_path / "vac.fits.work" / "stxcat.log").read_text()
    assert "resuming:" in log


@pytest.fixture
def finished_run(tmp_path, desi_release, tiny_bundle):
    """A finished run on a private copy of the release (its files can be changed)."""
    rel = tmp_path / "rel"
    shutil.copytree(desi_release.out, rel)
    out = tmp_path / "vac.fits"
    run_annotate([rel], out, tiny_bundle, partition_size=30)
    return rel, out


def test_resume_refuses_changed_model(finished_run, tiny_bundle, other_bundle):
    rel, out = finished_run
    with pytest.raises(RunStateError, match="model changed"):
        run_annotate([rel], out, other_bundle, partition_size=30, resume=True)


def test_resume_refuses_changed_inputs_or_partitions(finished_run, tiny_bundle):
    rel, out = finished_run
    with pytest.raises(RunStateError, match="partitioning changed"):
        run_annotate([rel], out, tiny_bundle, partition_size=90, resume=True)
    coadd = next(rel.rglob("coadd-*.fits"))
    st = coadd.stat()
    os.utime(coadd, (st.st_atime, st.st_mtime + 10))  # a file rewritten since the plan
    with pytest.raises(RunStateError, match="input files"):
        run_annotate([rel], out, tiny_bundle, partition_size=30, resume=True)


def test_resume_of_a_finished_run_redoes_nothing(finished_run, tiny_bundle):
    rel, out = finished_run
    before = read_table(out)
    summary = run_annotate([rel], out, tiny_bundle, partition_size=30, resume=True)
    assert summary.partitions_skipped == summary.partitions == 3
    assert_same_rows(read_table(out), before)


def test_existing_output_or_work_dir_needs_a_flag_and_overwrite_starts_over(finished_run, tiny_bundle):
    rel, out = finished_run
    before = read_table(out)
    with pytest.raises(StxcatError, match="exists: pass --overwrite"):
        run_annotate([rel], out, tiny_bundle, partition_size=30)
    os.unlink(out)
    res = CliRunner().invoke(main, ["annotate", str(rel), "--out", str(out), "--model", tiny_bundle,
                                    "--partition-size", "30", "--no-progress"])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not empty" in lines[0] and "--overwrite" in lines[0], res.output
    # --overwrite: a new plan (other partitioning) and new parts, no leftovers of the old run
    summary = run_annotate([rel], out, tiny_bundle, partition_size=90, overwrite=True)
    assert summary.partitions == 1 and summary.partitions_skipped == 0
    assert sorted(os.listdir(str(out) + ".work/parts")) == ["part-00000.done", "part-00000.fits"]
    assert_same_rows(read_table(out), before)  # the rows do not depend on the partitioning


def test_resume_and_overwrite_together_is_a_config_error(tmp_path, desi_release, tiny_bundle):
    res = CliRunner().invoke(main, ["annotate", desi_release.out, "--out", str(tmp_path / "v.fits"),
                                    "--model", tiny_bundle, "--resume", "--overwrite"])
    assert res.exit_code == 1 and "contradict" in res.output
