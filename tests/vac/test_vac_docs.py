"""docs/vac.md is generated from the data model: it must be in sync, and its examples must run."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import numpy as np

from catalog_tool.vac import datamodel as dm
from catalog_tool.vac import flags as fl
from catalog_tool.vac import write as w
from catalog_tool.vac.docs import DOCS_PATH, render_docs
from vac_factory import make_columns, provenance

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_docs_page_matches_the_data_model():
    page = (ROOT / DOCS_PATH).read_text(encoding="utf-8")
    assert page == render_docs(), "docs/vac.md is stale: run python scripts/gen_vac_docs.py"
    for c in dm.COLUMNS:
        assert f"| `{c.name}` |" in page and c.description in page
    for f in fl.FLAG_BITS:
        assert f"`{f.name}`" in page


def test_gen_script_check_mode():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_vac_docs.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_python_examples_in_docs_run(tmp_path, monkeypatch, rng, capsys):
    cols = make_columns(20, rng)
    cols["FLAGS"][:5] = 2  # LOW_SNR, so the example's selection is not empty
    w.write_vac(tmp_path / "vac.fits", cols, provenance=provenance(), errors=[])
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", render_docs(), re.S)
    assert len(blocks) == 2
    scope: dict = {}
    for code in blocks:
        exec(compile(code, "docs/vac.md", "exec"), scope)  # noqa: S102 - our own docs
    assert scope["low_snr"].sum() == np.sum((cols["FLAGS"] & 2) != 0)
    assert len(scope["good"]) == np.sum(w.read_vac("vac.fits")["PRIMARY"] & ~fl.flag_bad(cols["FLAGS"])[
        np.argsort(cols["HEALPIX"], kind="stable")])
