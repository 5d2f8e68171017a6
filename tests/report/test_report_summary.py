"""The numbers of a report against the VAC, recomputed here with astropy (not the report's reader)."""

from __future__ import annotations

import json
import os
import re
from collections import Counter

import numpy as np
import pytest
from astropy.io import fits

from catalog_tool.report.stats import binned_2d, grouped_quantiles, text_codes
from catalog_tool.vac import flags as fl


@pytest.fixture(scope="module")
def table(synthetic_vac):
    with fits.open(synthetic_vac) as hdul:
        return hdul["STELLAR_PARAMS"].data.copy()


@pytest.fixture(scope="module")
def summary(synthetic_report):
    with open(os.path.join(synthetic_report.out_dir, "summary.json")) as fh:
        return json.load(fh)


def test_row_and_flag_bad_counts(table, summary):
    n = len(table)
    assert summary["rows"] == n == 4000
    assert summary["flag_bad"] == int(table["FLAG_BAD"].sum())
    assert summary["flag_bad_fraction"] == pytest.approx(table["FLAG_BAD"].mean(), abs=1e-12)
    assert summary["estimated"] == int(np.isfinite(table["FEH"]).sum())
    assert summary["primary"] == int(table["PRIMARY"].sum())
    assert summary["healpix_pixels"] == len(set(table["HEALPIX"].tolist())) == 5
    # FLAG_BAD is a non-trivial subset: the test data must exercise both sides
    assert 0.1 < summary["flag_bad_fraction"] < 0.6


def test_flag_counts_per_bit(table, summary):
    flags = table["FLAGS"].astype(np.int64)
    got = {r["name"]: r for r in summary["flags"]}
    assert [r["bit"] for r in summary["flags"]] == [b.bit for b in fl.FLAG_BITS]
    for b in fl.FLAG_BITS:
        expected = sum(1 for v in flags.tolist() if v >> b.bit & 1)
        assert got[b.name]["count"] == expected, b.name
        assert got[b.name]["fraction"] == pytest.approx(expected / len(flags))
        assert got[b.name]["bad"] is b.bad
    # the drawn flag mix sets these bits and leaves the others at zero
    assert got["LOW_SNR"]["count"] > got["ZWARN"]["count"] > 0
    assert got["INPUT_OUT_OF_DOMAIN"]["count"] == 0


def test_rows_per_survey_and_program(table, summary):
    survey = [s.strip() for s in table["SURVEY"]]
    program = [p.strip() for p in table["PROGRAM"]]
    bad = table["FLAG_BAD"].tolist()
    by_survey = Counter(survey)
    assert {r["survey"]: r["rows"] for r in summary["by_survey"]} == dict(by_survey)
    bad_by_survey = Counter(s for s, b in zip(survey, bad) if b)
    assert {r["survey"]: r["flag_bad"] for r in summary["by_survey"]} == {s: bad_by_survey[s] for s in by_survey}
    by_prog = Counter(zip(survey, program))
    assert {(r["survey"], r["program"]): r["rows"] for r in summary["by_program"]} == dict(by_prog)
    # uneven draw: main is the largest survey, special the smallest
    rows = {r["survey"]: r["rows"] for r in summary["by_survey"]}
    assert max(rows, key=rows.get) == "main" and min(rows, key=rows.get) == "special"


def test_label_statistics_use_good_rows(table, summary):
    good = ~table["FLAG_BAD"]
    for row in summary["labels"]:
        v = table[row["label"]]
        sel = good & np.isfinite(v)
        assert row["good"] == int(sel.sum())
        assert row["estimated"] == int(np.isfinite(v).sum())
        assert row["median"] == pytest.approx(float(np.median(v[sel])), rel=1e-6)


def test_html_shows_the_counts(table, synthetic_report, summary):
    text = open(synthetic_report.html, encoding="utf-8").read()
    for r in summary["flags"]:
        assert re.search(rf"<td[^>]*>{r['bit']}</td><td[^>]*>{r['name']}</td>.*?<td[^>]*>{r['count']:,}</td>", text), r
    for r in summary["by_survey"]:
        assert re.search(rf"<td[^>]*>{r['survey']}</td><td[^>]*>{r['rows']:,}</td>", text)
    assert f"{len(table):,}" in text
    assert "report-test-bundle" in text  # provenance from the header


def test_all_rows_option_changes_figures_not_counts(synthetic_vac, tmp_path, summary):
    from catalog_tool.report import make_report

    r = make_report(synthetic_vac, tmp_path, good_only=False)
    assert r.summary["rows"] == summary["rows"] and r.summary["flags"] == summary["flags"]
    good = {x["label"]: x["good"] for x in summary["labels"]}
    every = {x["label"]: x["good"] for x in r.summary["labels"]}
    assert all(every[k] > good[k] for k in good)


def test_grouped_quantiles_match_numpy(rng):
    groups = rng.integers(0, 7, 500)
    values = rng.normal(size=500)
    values[::13] = np.nan
    keys, q, counts = grouped_quantiles(groups=groups, values=values, q=[0.16, 0.5, 0.9])
    for k, row, c in zip(keys, q, counts):
        v = values[(groups == k) & np.isfinite(values)]
        assert c == v.size
        np.testing.assert_allclose(row, np.quantile(v, [0.16, 0.5, 0.9]), rtol=1e-12)


def test_binned_2d_matches_histogram2d(rng):
    x, y, w = rng.uniform(-1, 3, 1000), rng.uniform(10, 20, 1000), rng.normal(size=1000)
    count, total = binned_2d(x=x, y=y, xrange=(0, 2), yrange=(12, 19), bins=(5, 7), weights=w)
    h, _, _ = np.histogram2d(x, y, bins=(5, 7), range=((0, 2), (12, 19)))
    hw, _, _ = np.histogram2d(x, y, bins=(5, 7), range=((0, 2), (12, 19)), weights=w)
    np.testing.assert_array_equal(count, h.T)  # rows follow y
    np.testing.assert_allclose(total, hw.T, atol=1e-12)


def test_text_codes_strip_and_merge():
    codes, names = text_codes(np.array(["sv3", "main", " main", "lamost", "sv3 "]))
    assert names.tolist() == ["lamost", "main", "sv3"]
    assert names[codes].tolist() == ["sv3", "main", "main", "lamost", "sv3"]
