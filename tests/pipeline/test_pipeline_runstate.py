"""Run state under stress: two runs on one work dir, a full disk, SIGKILL during the merge."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from catalog_tool.cli import main
from catalog_tool.io import atomic
from catalog_tool.pipeline.resume import WorkDir
from pipeline_helpers import assert_same_rows, read_table


def _args(release, out, bundle, *more):
    return ["annotate", os.fspath(release), "--out", os.fspath(out), "--model", bundle, "--partition-size", "30",
            "--no-progress", *more]


def _temps(folder) -> list[str]:
    found = []
    for base, _, files in os.walk(folder):
        found += [os.path.join(base, f) for f in files if f.endswith(atomic.TEMP_SUFFIX)]
    return found


def test_a_second_run_on_the_same_work_dir_is_refused(tmp_path, desi_release, tiny_bundle):
    out = tmp_path / "vac.fits"
    with WorkDir(str(out) + ".work").lock():  # another annotate holds the work dir
        res = CliRunner().invoke(main, _args(desi_release.out, out, tiny_bundle))
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "in use by another stxcat annotate" in lines[0], res.output
    assert f"pid {os.getpid()}" in lines[0]
    assert not out.exists()
    # the lock is gone with its holder: the same command now runs
    res = CliRunner().invoke(main, _args(desi_release.out, out, tiny_bundle))
    assert res.exit_code == 0, res.output
    assert out.exists()


_HOLD_AT_FIRST_PARTITION = """
import os, sys, time
from catalog_tool.pipeline import partition
run_partition = partition.run_partition
def held(*a, **k):   # the run holds its work dir (and its lock) until told to go on
    open(os.environ["STXCAT_TEST_READY"], "w").close()
    while not os.path.exists(os.environ["STXCAT_TEST_GO"]):
        time.sleep(0.01)
    return run_partition(*a, **k)
partition.run_partition = held
from catalog_tool.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_two_processes_at_once_then_sigkill_releases_the_lock(tmp_path, desi_release, tiny_bundle, reference_vac):
    out = tmp_path / "vac.fits"
    args = _args(desi_release.out, out, tiny_bundle, "--scheduler", "synchronous")
    ready, go = tmp_path / "ready", tmp_path / "go"
    env = dict(os.environ, OMP_NUM_THREADS="1", STXCAT_TEST_READY=str(ready), STXCAT_TEST_GO=str(go))
    first = subprocess.Popen([sys.executable, "-c", _HOLD_AT_FIRST_PARTITION, *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not ready.exists():
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first run never reached its first partition"
            time.sleep(0.01)
        second = CliRunner().invoke(main, [*args, "--resume"])  # a second run, from this process
        assert first.poll() is None  # still holding the work dir
        assert second.exit_code == 1, second.output
        lines = [ln for ln in second.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and "in use by another stxcat annotate" in lines[0], second.output
        assert f"pid {first.pid}" in lines[0]
        os.kill(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    res = CliRunner().invoke(main, [*args, "--resume"])  # the kernel dropped the dead run's lock
    assert res.exit_code == 0, res.output
    assert_same_rows(read_table(out), read_table(reference_vac))


def _fail_fsync_of(prefix, monkeypatch, calls):
    real = atomic._fsync

    def fsync(path):
        if os.path.basename(path).startswith(prefix):
            calls.append(path)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real(path)

    monkeypatch.setattr(atomic, "_fsync", fsync)


@pytest.mark.parametrize("victim", [".vac.fits.", ".part-00001.fits."])
def test_disk_full_is_one_line_leaves_no_partial_vac_and_resume_finishes(
        tmp_path, desi_release, tiny_bundle, reference_vac, monkeypatch, victim):
    out = tmp_path / "vac.fits"
    calls = []
    with monkeypatch.context() as m:
        _fail_fsync_of(victim, m, calls)
        res = CliRunner().invoke(main, _args(desi_release.out, out, tiny_bundle))
    assert calls, "the simulated full disk was never hit"
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no space left on device" in lines[0] and "--resume" in lines[0], res.output
    assert "Traceback" not in res.output
    assert not out.exists()
    assert _temps(tmp_path) == []  # the temporary file of the failed write is gone too
    # space freed: --resume finishes, with the rows of an uninterrupted run
    res = CliRunner().invoke(main, _args(desi_release.out, out, tiny_bundle, "--resume"))
    assert res.exit_code == 0, res.output
    assert_same_rows(read_table(out), read_table(reference_vac))


def test_cfitsio_write_error_on_a_nearly_full_disk_is_a_disk_full_error(tmp_path, monkeypatch):
    """CFITSIO reports a full disk as a status code without an errno: the free space tells."""
    import shutil

    target = tmp_path / "x.fits"
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=4096))
    with pytest.raises(atomic.DiskFullError, match="no space left on device .4.0 KiB free"):
        with atomic.atomic_path(target) as tmp:
            open(tmp, "wb").write(b"x" * 100)
            raise OSError("FITSIO status = 106: error writing to FITS file")
    assert not target.exists() and os.listdir(tmp_path) == []
    # with room on the disk the same error is not mistaken for a full disk
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=10 << 30))
    with pytest.raises(OSError, match="status = 106") as err:
        with atomic.atomic_path(target):
            raise OSError("FITSIO status = 106: error writing to FITS file")
    assert not isinstance(err.value, atomic.DiskFullError)


_KILL_IN_MERGE = """
import os, signal, sys
from catalog_tool.vac import write as w
merge = w.merge_parts
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)   # after STELLAR_PARAMS is written, before ERRORS
def merge_then_die(*a, **k):
    w._write_errors = die
    return merge(*a, **k)
w.merge_parts = merge_then_die
from catalog_tool.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_during_the_merge_then_resume(tmp_path, desi_release, tiny_bundle, reference_vac):
    out = tmp_path / "vac.fits"
    args = _args(desi_release.out, out, tiny_bundle)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    killed = subprocess.run([sys.executable, "-c", _KILL_IN_MERGE, *args], env=env, capture_output=True,
                            text=True, timeout=180)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not out.exists()
    left = _temps(tmp_path)
    assert [os.path.basename(p).startswith(".vac.fits.") for p in left] == [True]  # the half-written VAC
    res = CliRunner().invoke(main, [*args, "--resume"])
    assert res.exit_code == 0, res.output
    assert "resumed: 3 of 3 partitions were already done" in res.output
    assert_same_rows(read_table(out), read_table(reference_vac))
    assert _temps(tmp_path) == []
    assert "removed 1 temporary files left by an interrupted run" in (tmp_path / "vac.fits.work" / "stxcat.log").read_text()
