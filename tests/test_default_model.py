"""The bundled default model: it loads and verifies, its model card is generated from its own
metrics, and the README's main job (simulate a small release, annotate it) works with it."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import fitsio
import numpy as np
from click.testing import CliRunner

from catalog_tool.cli import main
from catalog_tool.models.bundle import bundled_names, load_bundle
from catalog_tool.sim.desi import simulate_desi

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_default_bundle_is_shipped_and_verified():
    assert "default" in bundled_names()
    b = load_bundle("default")
    assert b.label_names == ["FEH", "ALPHAFE", "TEFF", "LOGG"]
    assert b.ensemble_size == 5
    metrics = json.loads((ROOT / "docs" / "model-card-metrics.json").read_text())
    assert metrics["weights_sha256"] == b.sha256  # the card describes these very weights
    floor = b.manifest["uncertainty"]["floor"]
    assert set(floor) == set(b.label_names) and all(v >= 0 for v in floor.values())


def test_model_card_is_generated_from_the_metrics():
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_model_card.py"), "--check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_main_job_out_of_the_box(tmp_path):
    """As the README's first command: a simulated release annotated with the bundled model."""
    rel = simulate_desi(tmp_path / "demo", pixels=1, per_pixel=40, seed=1, resolution=False, checksum=False)
    out = tmp_path / "demo" / "vac.fits"
    res = CliRunner().invoke(main, ["annotate", rel.out, "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "stars estimated" in res.output and str(out) in res.output
    vac = fitsio.read(str(out), "STELLAR_PARAMS")
    truth = fitsio.read(rel.truth)
    kind = np.char.strip(truth["KIND"].astype(str))
    stars = truth[kind == "star"]
    est = vac[np.isfinite(vac["FEH"])]
    assert len(est) >= 0.8 * len(stars)
    # the estimates mean something: [Fe/H] of good stars within a few tenths of a dex of the truth
    t = {int(r["TARGETID"]): r for r in stars}
    good = [r for r in est if not r["FLAG_BAD"] and int(r["TARGETID"]) in t and r["SNR"] > 20]
    assert len(good) >= 5
    resid = np.array([r["FEH"] - t[int(r["TARGETID"])]["FEH"] for r in good])
    assert np.median(np.abs(resid)) < 0.25, resid
