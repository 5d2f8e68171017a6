"""One self-contained HTML page: the summary tables and every figure embedded as base64 PNG.

The page needs no other file (it can be mailed or attached to a ticket); the PNGs are also written
beside it for use elsewhere.
"""

from __future__ import annotations

import base64
import html
import math
import os

__all__ = ["html_table", "render_page", "format_value"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
tr.bad td:first-child { border-left: 3px solid #c33; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
code { background: #f5f5f5; padding: 0 .2em; }
"""


def format_value(v, *, digits: int = 4) -> str:
    """Text of a table cell: integers with thousands separators, floats to ``digits`` significant digits."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan"
        return f"{v:.{digits}g}"
    return str(v)


def html_table(rows: list[dict], *, columns: list[str] | None = None, headers: dict | None = None,
               row_class=None) -> str:
    """An HTML table of ``rows`` (escaped); ``row_class(row)`` may give a CSS class per row."""
    if not rows:
        return "<p><em>none</em></p>"
    columns = columns or list(rows[0])
    headers = headers or {}
    out = ["<table>", "<tr>" + "".join(
        f'<th class="{"text" if isinstance(rows[0].get(c), str) else ""}">{html.escape(headers.get(c, c))}</th>'
        for c in columns) + "</tr>"]
    for r in rows:
        cls = row_class(r) if row_class else ""
        cells = "".join(
            f'<td class="{"text" if isinstance(r.get(c), str) else ""}">{html.escape(format_value(r.get(c)))}</td>'
            for c in columns)
        out.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _img(path: str) -> str:
    with open(path, "rb") as fh:
        data = base64.b64encode(fh.read()).decode("ascii")
    return f'<img alt="{html.escape(os.path.basename(path))}" src="data:image/png;base64,{data}">'


def render_page(*, title: str, sections: list[tuple[str, str]], figures: list[tuple[str, str, str]]) -> str:
    """The page: ``sections`` are (heading, HTML body); ``figures`` are (heading, png path, caption)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>\n{body}")
    if figures:
        parts.append("<h2>Figures</h2>")
    for heading, path, caption in figures:
        parts.append(f'<figure id="{html.escape(os.path.splitext(os.path.basename(path))[0])}">'
                     f"<h3>{html.escape(heading)}</h3>{_img(path)}"
                     f"<figcaption>{html.escape(caption)} (<code>{html.escape(os.path.basename(path))}</code>)"
                     f"</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
