"""Every script in examples/ runs on tiny inputs with a tiny model bundle and prints what it promises."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from tiny_bundle_factory import make_tiny_bundle

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> str:
    """A 2-member multi-label bundle on the default grid and preprocessing (plumbing quality)."""
    import torch

    torch.set_num_threads(1)
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", seed=23, command="tests/test_examples.py")


def run_example(name: str, *args, cwd) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-W", "error::UserWarning", str(EXAMPLES / name), *map(str, args)],
                       cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_every_example_is_tested():
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    tested = {"annotate_desi.py", "annotate_lamost.py", "python_api.py"}
    # the fine-tuning comparison example is tested by its own owner's test
    assert tested <= scripts
    for p in (EXAMPLES / n for n in tested):
        doc = p.read_text().split('"""')[1]
        assert "Expected output" in doc and "--model" in p.read_text(), p.name


def test_annotate_desi(tiny_bundle, tmp_path):
    out = run_example("annotate_desi.py", "--model", tiny_bundle, "--out", "ex", "--pixels", "1",
                      "--per-pixel", "12", "--seed", "3", cwd=tmp_path)
    m = re.search(r"simulated 12 fibres \((\d+) stars\) in 1 HEALPix pixels", out)
    assert m, out
    stars = int(m.group(1))
    m = re.search(r"wrote ex/vac.fits: (\d+) rows, (\d+) estimated, (\d+) FLAG_BAD", out)
    assert m and int(m.group(2)) == stars, out
    assert re.search(rf"FEH vs truth: bias [+-]\d\.\d\d dex, scatter \d\.\d\d dex over {stars} stars", out), out
    assert (tmp_path / "ex" / "report" / "report.html").is_file()


def test_annotate_lamost(tiny_bundle, tmp_path):
    out = run_example("annotate_lamost.py", "--model", tiny_bundle, "--out", "ex", "--n", "4", "--seed", "2",
                      cwd=tmp_path)
    assert "simulated 4 LAMOST files" in out
    assert re.search(r"wrote ex/vac.fits: 4 rows", out), out
    rows = [line for line in out.splitlines() if re.match(r"\s*\d+\s+dr(1|7|10)\s", line)]
    assert len(rows) == 4, out
    assert "(matched on TARGETID)" in out


def test_python_api_simulated_and_real(tiny_bundle, tmp_path, realdata):
    out = run_example("python_api.py", "--model", tiny_bundle, cwd=tmp_path)
    assert re.search(r"read coadd-\S+\.fits: 20 spectra \(desi\), arms B, R, Z", out), out
    assert "model tiny: FEH, ALPHAFE, TEFF, LOGG (ensemble of 2)" in out
    lines = [line for line in out.splitlines() if re.match(r"\s+\d+\s+-?\d+\s", line)]
    assert len(lines) == 20
    lamost = sorted((realdata / "lamost").glob("*.fits*"))[0]
    out = run_example("python_api.py", "--model", tiny_bundle, lamost, cwd=tmp_path)
    assert re.search(r"read \S+: 1 spectra \(lamost\), arms LRS", out), out
