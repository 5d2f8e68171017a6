"""``stxcat report``: read a VAC (and optionally a truth table), write figures, tables and a page.

Output, in ``out_dir`` (files of these names are replaced, nothing else is touched):

* ``report.html``: one self-contained page (tables and every figure embedded);
* ``kiel.png``, ``alpha_feh.png``, ``sky_counts.png``, ``sky_feh.png``, ``uncertainty_snr.png``,
  ``distributions.png``, ``flags.png``; with a truth table also ``residuals.png``;
* ``summary.json``: the numbers of the tables (counts, flag fractions, rows per survey, label
  statistics, and with a truth table the metrics and calibration rows);
* ``metrics.md``: with a truth table, the metrics table in Markdown (as ``stxcat evaluate`` prints it).
"""

from __future__ import annotations

import html
import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from catalog_tool.report import html as page
from catalog_tool.report import plots
from catalog_tool.report.data import ReportError, read_vac_columns
from catalog_tool.report.summary import summarize
from catalog_tool.report.truth import match_truth, read_truth, truth_metrics
from catalog_tool.train.evaluate import format_markdown
from catalog_tool.vac import datamodel as dm

__all__ = ["ReportResult", "make_report", "REPORT_FILES"]

#: Every file a report may write (a rerun deletes the ones it does not write again).
REPORT_FILES = ("report.html", "summary.json", "metrics.md", "kiel.png", "alpha_feh.png", "sky_counts.png",
                "sky_feh.png", "uncertainty_snr.png", "distributions.png", "flags.png", "residuals.png")


@dataclass
class ReportResult:
    """What :func:`make_report` wrote.

    Attributes
    ----------
    out_dir, html : str
    figures : dict of str to str
        Figure name (file stem) -> PNG path.
    summary : dict
        As written to ``summary.json``.
    timings : dict of str to float
        Seconds per step (``read``, ``summary``, each figure, ``truth``, ``html``).
    """

    out_dir: str
    html: str
    figures: dict
    summary: dict
    timings: dict = field(default_factory=dict)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def make_report(vac_path: str | os.PathLike, out_dir: str | os.PathLike, *, truth: str | os.PathLike | None = None,
                good_only: bool = True) -> ReportResult:
    """Write the QA report of a VAC into ``out_dir`` (created if needed).

    Parameters
    ----------
    vac_path : path
        A VAC written by ``stxcat annotate``.
    out_dir : path
        Folder of the report.
    truth : path, optional
        A truth table (a simulation's ``truth-*.fits`` or a reference catalogue) to compare with;
        see :mod:`catalog_tool.report.truth` for the matching rules.
    good_only : bool
        Draw the figures and compute the metrics from rows without ``FLAG_BAD`` only (default);
        False uses every row with a value. Counts in the tables always cover every row.

    Returns
    -------
    ReportResult

    Raises
    ------
    StxcatError
        An unreadable or non-VAC file, an unusable truth table, or an ``out_dir`` that is a file.
    """
    timings = {}
    t = time.perf_counter()
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ReportError(f"--out {out_dir} is a file; give a folder for the report")
    vac = read_vac_columns(vac_path)
    truth_table = read_truth(truth) if truth is not None else None  # fail early, before any drawing
    timings["read"] = time.perf_counter() - t
    os.makedirs(out_dir, exist_ok=True)
    for name in REPORT_FILES:  # no stale figure of an earlier run left beside the new page
        p = os.path.join(out_dir, name)
        if os.path.isfile(p):
            os.unlink(p)

    def timed(key, func, **kw):
        t0 = time.perf_counter()
        out = func(**kw)
        timings[key] = time.perf_counter() - t0
        return out

    cols, labels = vac.columns, vac.labels
    summary = timed("summary", summarize, columns=cols, labels=labels, good_only=good_only, codes=vac.codes)
    shown = ~cols["FLAG_BAD"] if good_only else np.ones(vac.nrows, bool)
    which = "rows without FLAG_BAD" if good_only else "all rows with a value"

    def sel(name):
        return np.asarray(cols[name], float)[shown]

    figures: dict[str, str] = {}
    captions: list[tuple[str, str, str]] = []

    def figure(name, heading, caption, func, **kw):
        t0 = time.perf_counter()
        fig = func(**kw)
        path = plots.save_png(fig, os.path.join(out_dir, f"{name}.png"))
        timings[name] = time.perf_counter() - t0
        figures[name] = path
        captions.append((heading, path, caption))

    have = set(labels)
    if {"TEFF", "LOGG", "FEH"} <= have:
        figure("kiel", "Kiel diagram", f"Teff against log g, both axes inverted, coloured by [Fe/H]; {which}.",
               plots.kiel_figure, teff=sel("TEFF"), logg=sel("LOGG"), feh=sel("FEH"))
    if {"FEH", "ALPHAFE"} <= have:
        figure("alpha_feh", "[α/Fe] vs [Fe/H]", f"Star density; {which}. The thin (low-α) and thick "
               "(high-α) disc sequences separate here when the data hold both.",
               plots.alpha_feh_figure, feh=sel("FEH"), alphafe=sel("ALPHAFE"))
    first = labels[0]
    estimated_shown = shown & np.isfinite(np.asarray(cols[first], float))
    hpx = np.asarray(cols["HEALPIX"])[estimated_shown]
    figure("sky_counts", "Sky map: star counts", f"Stars with a {first} estimate per HEALPix pixel "
           f"(nside {dm.HEALPIX_NSIDE}, nested), Mollweide, equatorial; {which}.",
           plots.sky_figure, healpix=hpx, nside=dm.HEALPIX_NSIDE)
    if "FEH" in have:
        figure("sky_feh", "Sky map: median [Fe/H]", f"Median [Fe/H] per HEALPix pixel; {which}.",
               plots.sky_figure, healpix=hpx, nside=dm.HEALPIX_NSIDE,
               values=np.asarray(cols["FEH"], float)[estimated_shown])
    figure("uncertainty_snr", "Uncertainty vs S/N", f"Reported uncertainty of each label against the "
           f"median S/N per pixel, with the running median and 16-84% band; {which}.",
           plots.uncertainty_figure, snr=sel("SNR"), errors={lab: sel(f"{lab}_ERR") for lab in labels})
    figure("distributions", "Label distributions", f"Histograms of each label: {which} (line) over "
           "every row with a value (grey).", plots.distributions_figure,
           values={lab: sel(lab) for lab in labels},
           reference={lab: np.asarray(cols[lab], float) for lab in labels},
           shown_name="no FLAG_BAD" if good_only else "all")
    figure("flags", "Flag bits", "Rows with each FLAGS bit set, all rows; red bits make FLAG_BAD.",
           plots.flags_figure, flag_rows=summary["flags"], nrows=summary["rows"])

    metrics_md = None
    if truth_table is not None:
        t0 = time.perf_counter()
        survey_codes, survey_names = vac.codes["SURVEY"]
        match = match_truth(vac_targetid=cols["TARGETID"], vac_survey=survey_names[survey_codes], truth=truth_table,
                            rows=np.flatnonzero(shown))
        if match.vac_rows.size == 0:
            raise ReportError(f"no VAC row ({which}) matches a row of {truth_table.path} "
                              f"(matched on {truth_table.key.replace('+', ' and ')})")
        tm = truth_metrics(columns=cols, labels=labels, truth=truth_table, match=match)
        timings["truth"] = time.perf_counter() - t0
        figure("residuals", "Comparison with the truth", f"stxcat against {os.path.basename(truth_table.path)}"
               f" ({match.vac_rows.size:,} matched rows; {which}): estimate vs truth, and residual vs truth "
               "with the running median and 16-84% band.",
               plots.residuals_figure, pred=tm["pred"], true=tm["true"], names=tm["labels"])
        summary["truth"] = {"path": truth_table.path, "matched_on": truth_table.key,
                            "matched": int(match.vac_rows.size), "vac_unmatched": match.n_vac_unmatched,
                            "truth_unmatched": match.n_truth_unmatched,
                            "truth_duplicates": match.n_truth_duplicates,
                            "metrics": tm["metrics"], "calibration": tm["calibration"]}
        metrics_md = format_markdown(tm["metrics"], columns=["label", "subset", "n", "n_missing", "bias", "scatter",
                                                             "mae", "r2"])

    t0 = time.perf_counter()
    summary = _jsonable(summary)
    with open(os.path.join(out_dir, "summary.json"), "w") as fh:
        json.dump({"vac": os.path.abspath(vac.path), "provenance": vac.provenance, **summary}, fh, indent=2)
        fh.write("\n")
    if metrics_md is not None:
        with open(os.path.join(out_dir, "metrics.md"), "w") as fh:
            fh.write(metrics_md)
    html_path = os.path.join(out_dir, "report.html")
    with open(html_path, "w", encoding="utf-8") as fh:
        fh.write(page.render_page(title=f"stxcat report: {os.path.basename(vac.path)}",
                                  sections=_sections(vac, summary), figures=captions))
    timings["html"] = time.perf_counter() - t0
    return ReportResult(out_dir=out_dir, html=html_path, figures=figures, summary=summary, timings=timings)


def _sections(vac, summary: dict) -> list[tuple[str, str]]:
    """The page's tables, in reading order."""
    s = summary
    frac = s["flag_bad_fraction"]
    overview = [
        {"quantity": "rows", "value": s["rows"]},
        {"quantity": f"rows with a {vac.labels[0]} estimate", "value": s["estimated"]},
        {"quantity": "rows with FLAG_BAD", "value": s["flag_bad"]},
        {"quantity": "FLAG_BAD fraction", "value": frac},
        {"quantity": "PRIMARY rows (one per target)", "value": s["primary"]},
        {"quantity": "HEALPix pixels (nside 64)", "value": s["healpix_pixels"]},
        {"quantity": "figures drawn from", "value": "rows without FLAG_BAD" if s["good_only"] else "all rows"},
    ]
    prov = [{"card": k, "value": str(v)} for k, v in vac.provenance.items()]
    sections = [
        ("Summary", page.html_table(overview) + page.html_table(prov, headers={"card": "header card"})),
        ("Rows per survey", page.html_table(s["by_survey"]) + page.html_table(s["by_program"])),
        ("Flags", "<p>Rows with each bit of <code>FLAGS</code> set (a row can have several). Bits marked "
         "<em>bad</em> make <code>FLAG_BAD</code>.</p>"
         + page.html_table(s["flags"], columns=["bit", "name", "bad", "count", "fraction", "description"],
                           row_class=lambda r: "bad" if r["bad"] else "")),
        ("Labels", "<p>Percentiles of the values " + ("of rows without FLAG_BAD" if s["good_only"] else "")
         + "; <em>estimated</em> counts every row with a value.</p>" + page.html_table(s["labels"])),
    ]
    if "truth" in s:
        tr = s["truth"]
        body = (f"<p>Matched {tr['matched']:,} VAC rows to <code>{html.escape(str(tr['path']))}</code> on "
                f"{tr['matched_on'].replace('+', ' and ')}; {tr['vac_unmatched']:,} VAC rows without a truth row, "
                f"{tr['truth_unmatched']:,} truth rows unmatched, {tr['truth_duplicates']:,} duplicate truth ids "
                "ignored. Residual = stxcat − truth; scatter = 1.4826 × MAD; split at true [Fe/H] = −1.</p>"
                + page.html_table(tr["metrics"], columns=["label", "subset", "n", "n_missing", "bias", "scatter",
                                                          "mae", "r2"])
                + "<p>Calibration: spread of z = residual / uncertainty per S/N bin (1 when the "
                  "uncertainties are right).</p>"
                + page.html_table(tr["calibration"]))
        sections.append(("Comparison with the truth", body))
    return sections
