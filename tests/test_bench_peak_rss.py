"""benchmarks/peak_rss.py: the peak memory the benchmarks print is the child's own, not its parent's."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not pathlib.Path("/proc/self/status").exists(), reason="needs Linux /proc")


@pytest.fixture(scope="module")
def pr():
    spec = importlib.util.spec_from_file_location("peak_rss", ROOT / "benchmarks" / "peak_rss.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _module(tmp_path, body: str) -> dict:
    (tmp_path / "small_job.py").write_text(body)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))


def test_a_wrapped_child_reports_its_own_peak_not_the_parents(pr, tmp_path):
    big = np.ones(40_000_000)  # 320 MB touched in this process: its high-water mark
    assert pr.peak_mib() > 300
    del big
    env = _module(tmp_path, "import numpy as np\nx = np.ones(12_500_000)  # 100 MB\nprint(float(x.sum()))\n")
    out = tmp_path / "peak.json"
    proc = subprocess.Popen(pr.wrap(out, "small_job", []), env=env, stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert proc.stdout.read().strip() == "12500000.0"
    own = pr.read(out)
    # the child's 100 MB array plus the interpreter; os.wait4's ru_maxrss for the same child is, on
    # Linux, at least this process's 320 MB high-water mark (what the benchmarks printed before)
    assert 95 < own < 250, (own, usage.ru_maxrss / 1024)


def test_the_peak_is_recorded_when_the_module_exits_with_an_error(pr, tmp_path):
    env = _module(tmp_path, "import sys\nsys.exit(3)\n")
    out = tmp_path / "peak.json"
    code = subprocess.run(pr.wrap(out, "small_job", ["--anything"]), check=False, env=env).returncode
    assert code == 3
    assert 0 < pr.read(out) < 250
