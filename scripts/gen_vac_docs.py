#!/usr/bin/env python
"""Write docs/vac.md from the VAC data model (catalog_tool/vac/datamodel.py and flags.py).

Usage: ``python scripts/gen_vac_docs.py`` (rewrite the page) or ``--check`` (exit 1 if it is stale).
"""

from __future__ import annotations

import pathlib
import sys

from catalog_tool.vac.docs import DOCS_PATH, render_docs

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    path = ROOT / DOCS_PATH
    text = render_docs()
    if "--check" in argv:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{DOCS_PATH} is out of date: run python scripts/gen_vac_docs.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {DOCS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
