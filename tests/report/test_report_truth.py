"""Matching a VAC to a truth table, and the metrics against it."""

from __future__ import annotations

import json
import os

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from catalog_tool.report import ReportError, make_report
from catalog_tool.report.truth import TruthTable, match_truth, read_truth
from catalog_tool.train.evaluate import regression_metrics


def write_table(path, cols: dict, extname="TRUTH"):
    data = np.zeros(len(next(iter(cols.values()))), dtype=[(k, np.asarray(v).dtype) for k, v in cols.items()])
    for k, v in cols.items():
        data[k] = v
    fitsio.write(path, data, extname=extname, clobber=True)
    return os.fspath(path)


@pytest.fixture(scope="module")
def vac_table(synthetic_vac):
    with fits.open(synthetic_vac) as hdul:
        return hdul["STELLAR_PARAMS"].data.copy()


def planted_truth(vac_table, tmp_path, *, with_survey=True):
    """Truth = VAC - 0.1 dex in FEH for DESI rows (a bias of +0.1), shuffled, with extra rows."""
    desi = np.char.strip(vac_table["SURVEY"]) != "lamost"
    rows = np.flatnonzero(desi)
    rng = np.random.default_rng(3)
    order = rng.permutation(rows)
    n_extra = 50
    tid = np.concatenate([vac_table["TARGETID"][order], 1 + np.arange(n_extra)])
    feh = np.concatenate([vac_table["FEH"][order] - 0.1, np.zeros(n_extra)])
    teff = np.concatenate([vac_table["TEFF"][order] + 30.0, np.zeros(n_extra)])
    cols = {"TARGETID": tid, "FE_H": feh, "teff": teff}
    if with_survey:
        cols["SURVEY"] = np.concatenate([np.char.strip(vac_table["SURVEY"][order]), np.full(n_extra, "main")]).astype("S8")
    return write_table(tmp_path / "truth.fits", cols), order


def test_truth_report_metrics(synthetic_vac, vac_table, tmp_path):
    truth_path, order = planted_truth(vac_table, tmp_path)
    r = make_report(synthetic_vac, tmp_path / "rep", truth=truth_path)
    tr = r.summary["truth"]
    good_desi = np.flatnonzero((np.char.strip(vac_table["SURVEY"]) != "lamost") & ~vac_table["FLAG_BAD"])
    assert tr["matched_on"] == "TARGETID+SURVEY"
    assert tr["matched"] == good_desi.size
    assert tr["truth_unmatched"] == 50 + int(vac_table["FLAG_BAD"][order].sum())
    m = {(x["label"], x["subset"]): x for x in tr["metrics"]}
    assert {lab for lab, _ in m} == {"FEH", "TEFF"}  # the labels the truth has (FE_H alias, lower-case teff)
    feh = vac_table["FEH"][good_desi].astype(float)
    assert m[("FEH", "all")]["bias"] == pytest.approx(0.1, abs=1e-5)
    assert m[("TEFF", "all")]["bias"] == pytest.approx(-30.0, abs=1e-2)
    assert m[("FEH", "all")]["scatter"] == pytest.approx(0.0, abs=1e-5)
    ok = np.isfinite(feh)
    poor = (feh - 0.1) < -1
    assert m[("FEH", "[Fe/H] < -1")]["n"] == int((poor & ok).sum()) > 0
    assert m[("FEH", "[Fe/H] >= -1")]["n"] == int((~poor & ok).sum())
    assert m[("FEH", "all")]["n_missing"] == int((~ok).sum())
    # the residual figure and the Markdown table of evaluate
    assert os.path.getsize(r.figures["residuals"]) > 1000
    md = open(os.path.join(r.out_dir, "metrics.md")).read()
    assert md.startswith("| label | subset | n |") and "[Fe/H] < -1" in md
    with open(os.path.join(r.out_dir, "summary.json")) as fh:
        assert json.load(fh)["truth"]["matched"] == good_desi.size
    assert "Comparison with the truth" in open(r.html).read()


def test_match_targetid_only_and_obsid():
    vac_tid = np.array([5, 7, 5, 9, 700], np.int64)
    vac_survey = np.array(["main", "main", "sv3", "main", "lamost"])
    t = TruthTable(path="t", key="TARGETID", ids=np.array([9, 5, 5, 11]), survey=None,
                   labels={"FEH": np.array([0.9, 0.5, 0.55, 1.1])})
    m = match_truth(vac_targetid=vac_tid, vac_survey=vac_survey, truth=t)
    # both rows of TARGETID 5 (two surveys) match its first truth row; the duplicate is counted
    assert m.vac_rows.tolist() == [0, 2, 3] and m.truth_rows.tolist() == [1, 1, 0]
    assert (m.n_vac_unmatched, m.n_truth_unmatched, m.n_truth_duplicates) == (2, 1, 1)
    t2 = TruthTable(path="t", key="OBSID", ids=np.array([700, 5]), survey=None, labels={"FEH": np.zeros(2)})
    m2 = match_truth(vac_targetid=vac_tid, vac_survey=vac_survey, truth=t2)
    assert m2.vac_rows.tolist() == [4] and m2.truth_rows.tolist() == [0]  # OBSID only meets LAMOST rows
    t3 = TruthTable(path="t", key="TARGETID+SURVEY", ids=np.array([5, 5]), survey=np.array(["sv3", "dark"]),
                    labels={"FEH": np.zeros(2)})
    m3 = match_truth(vac_targetid=vac_tid, vac_survey=vac_survey, truth=t3, rows=np.array([1, 2, 3]))
    assert m3.vac_rows.tolist() == [2] and m3.truth_rows.tolist() == [0]


def test_read_truth_errors(tmp_path):
    no_id = write_table(tmp_path / "a.fits", {"NAME": np.array([1, 2]), "FEH": np.zeros(2)})
    with pytest.raises(ReportError, match="neither a TARGETID nor an OBSID"):
        read_truth(no_id)
    no_label = write_table(tmp_path / "b.fits", {"TARGETID": np.array([1, 2]), "RV": np.zeros(2)})
    with pytest.raises(ReportError, match="no label column"):
        read_truth(no_label)
    obs = write_table(tmp_path / "c.fits", {"obsid": np.array([3, 4]), "LOGG": np.ones(2)}, extname="CAT")
    t = read_truth(obs)
    assert t.key == "OBSID" and t.ids.tolist() == [3, 4] and list(t.labels) == ["LOGG"]


def test_no_match_is_an_error(synthetic_vac, tmp_path):
    truth = write_table(tmp_path / "t.fits", {"TARGETID": np.array([1, 2, 3]), "FEH": np.zeros(3)})
    with pytest.raises(ReportError, match="no VAC row .* matches"):
        make_report(synthetic_vac, tmp_path / "rep", truth=truth)


def test_regression_metrics_reused():
    # the report's numbers are evaluate's: a sanity anchor that the import is the shared function
    from catalog_tool.report import truth as truth_mod

    assert truth_mod.evaluate.regression_metrics is regression_metrics
