"""End to end: simulate a tiny DESI release, annotate it with a tiny bundle, report with its truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner

from catalog_tool.cli import main


@pytest.fixture(scope="module")
def annotated(tmp_path_factory, tiny_bundle):
    from catalog_tool.config import build_config
    from catalog_tool.pipeline.run import annotate
    from catalog_tool.sim.desi import simulate_desi

    root = tmp_path_factory.mktemp("e2e")
    sim = simulate_desi(root / "rel", pixels=2, per_pixel=20, seed=4, resolution=False, checksum=False)
    cfg = build_config(inputs=(str(root / "rel"),), out=str(root / "vac.fits"), model=tiny_bundle,
                       progress=False, scheduler="synchronous")
    annotate(cfg)
    return root / "vac.fits", sim.truth


def test_report_of_an_annotated_release(annotated, tmp_path):
    vac, truth = annotated
    r = CliRunner().invoke(main, ["report", str(vac), "--out", str(tmp_path), "--truth", truth])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "summary.json").read_text())
    with fits.open(vac) as h:
        t = h["STELLAR_PARAMS"].data
        with fits.open(truth) as ht:
            kind = dict(zip(ht[1].data["TARGETID"].tolist(), np.char.strip(ht[1].data["KIND"]).tolist()))
    assert s["rows"] == len(t)
    assert s["flag_bad"] == int(t["FLAG_BAD"].sum())
    assert {r["survey"]: r["rows"] for r in s["by_survey"]} == {"main": len(t)}
    not_star = sum(1 for v in t["FLAGS"].tolist() if v & 1)
    assert {f["name"]: f["count"] for f in s["flags"]}["NOT_STAR"] == not_star
    # every good VAC row is a simulated star and is matched on TARGETID and SURVEY
    good = ~t["FLAG_BAD"]
    assert s["truth"]["matched_on"] == "TARGETID+SURVEY"
    assert s["truth"]["matched"] == int(good.sum()) > 0
    assert all(kind[i] == "star" for i in t["TARGETID"][good].tolist())
    labels = {m["label"] for m in s["truth"]["metrics"]}
    assert labels == {"FEH", "ALPHAFE", "TEFF", "LOGG"}
    assert (tmp_path / "residuals.png").stat().st_size > 1000
