"""Quality-assessment report of a VAC: figures, summary tables, one self-contained HTML page.

``make_report(vac_path, out_dir, truth=None, good_only=True)`` is what ``stxcat report`` runs.
Modules: :mod:`~catalog_tool.report.data` (column-wise reading), :mod:`~catalog_tool.report.summary`
(counts), :mod:`~catalog_tool.report.truth` (matching and metrics), :mod:`~catalog_tool.report.plots`
(figures), :mod:`~catalog_tool.report.html` (the page), :mod:`~catalog_tool.report.build` (the
whole report).
"""

from catalog_tool.report.build import REPORT_FILES, ReportResult, make_report
from catalog_tool.report.data import ReportError

__all__ = ["make_report", "ReportResult", "ReportError", "REPORT_FILES"]
