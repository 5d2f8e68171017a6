"""A real Dask distributed cluster on this machine: a scheduler and two worker processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import fitsio
import pytest

from pipeline_helpers import assert_same_rows, read_table, run_annotate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
    """``dask scheduler`` + two ``dask worker`` processes (one thread each); always killed."""
    from distributed import Client

    dask_cli = shutil.which("dask", path=os.path.dirname(sys.executable)) or shutil.which("dask")
    assert dask_cli, "the dask command line (distributed) is not installed"
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # workers run in their own directory: paths handed to them must not depend on our cwd
    wdir = tmp_path / "workers"
    wdir.mkdir()
    procs = []
    logs = []

    def start(*args):
        log = open(tmp_path / f"dask-{len(procs)}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen([dask_cli, *args], cwd=wdir, env=env, stdout=log, stderr=subprocess.STDOUT))

    try:
        start("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
        for _ in range(2):
            start("worker", address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1",
                  "--local-directory", str(wdir))
        deadline = time.monotonic() + 90
        while True:
            try:
                with Client(address, timeout="5s") as client:
                    client.wait_for_workers(2, timeout=max(deadline - time.monotonic(), 1))
                break
            except OSError:
                assert time.monotonic() < deadline, "the Dask cluster did not come up in 90 s"
                assert all(p.poll() is None for p in procs), "a dask process died at start-up"
                time.sleep(0.5)
        yield address
    finally:
        for p in reversed(procs):  # only the processes started here, by their handles
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait(timeout=30)
        for log in logs:
            log.close()


def test_distributed_run_equals_local_run(tmp_path, monkeypatch, dask_cluster, desi_release, tiny_bundle,
                                          reference_vac):
    # relative output and model paths from another directory: the workers must get absolute ones
    monkeypatch.chdir(tmp_path)
    os.symlink(tiny_bundle, tmp_path / "model")
    summary = run_annotate([desi_release.out], "vac.fits", "model", partition_size=30, scheduler=dask_cluster,
                           device="auto")
    assert summary.partitions == 3 and summary.ok
    # 'auto' is resolved by each worker (here: no GPU), not by the client
    assert summary.device == "cpu"
    assert fitsio.read_header(tmp_path / "vac.fits", ext="STELLAR_PARAMS")["DEVICE"] == "cpu"
    assert_same_rows(read_table(tmp_path / "vac.fits"), read_table(reference_vac))
    assert sorted(os.listdir(tmp_path / "vac.fits.work" / "parts")) == [
        f"part-0000{i}.{ext}" for i in range(3) for ext in ("done", "fits")]
