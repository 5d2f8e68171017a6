"""Every figure of a report exists, is a valid PNG and is embedded in the page."""

from __future__ import annotations

import base64
import os
import re
import struct
import zlib

import pytest

from catalog_tool.report import REPORT_FILES, make_report

FIGURES = ("kiel", "alpha_feh", "sky_counts", "sky_feh", "uncertainty_snr", "distributions", "flags")


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG after checking its signature, IHDR chunk and CRC, and IEND."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(data[12:29])
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82", "PNG not complete"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("name", FIGURES)
def test_figure_is_a_png(synthetic_report, name):
    path = synthetic_report.figures[name]
    assert path == os.path.join(synthetic_report.out_dir, f"{name}.png")
    w, h = png_size(open(path, "rb").read())
    assert 300 < w < 3000 and 200 < h < 2000


def test_page_embeds_every_figure(synthetic_report):
    text = open(synthetic_report.html, encoding="utf-8").read()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == len(FIGURES)
    for b64, name in zip(images, FIGURES):
        assert base64.b64decode(b64) == open(synthetic_report.figures[name], "rb").read()
    assert "residuals" not in synthetic_report.figures  # no truth given


def test_large_vac_is_drawn_as_density(large_vac, tmp_path):
    r = make_report(large_vac, tmp_path)
    for name in FIGURES:
        png_size(open(r.figures[name], "rb").read())
    # 12,000 points as a scatter would make a much larger file than a 160x160 histogram does
    assert os.path.getsize(r.figures["alpha_feh"]) < 150_000


def test_rerun_removes_stale_files(synthetic_vac, tmp_path):
    (tmp_path / "residuals.png").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    make_report(synthetic_vac, tmp_path)
    assert not (tmp_path / "residuals.png").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert {p.name for p in tmp_path.iterdir()} == ({f"{f}.png" for f in FIGURES}
                                                    | {"report.html", "summary.json", "notes.txt"})
    assert set(REPORT_FILES) >= {f"{f}.png" for f in FIGURES}


def test_empty_vac_gives_a_report(tmp_path):
    from report_factory import make_columns, provenance
    import numpy as np
    from catalog_tool.vac.write import write_vac

    cols = {k: v[:0] for k, v in make_columns(10, np.random.default_rng(0)).items()}
    write_vac(tmp_path / "empty.fits", cols, provenance=provenance())
    r = make_report(tmp_path / "empty.fits", tmp_path / "rep")
    assert r.summary["rows"] == 0 and r.summary["flag_bad_fraction"] is None
    for name in FIGURES:
        png_size(open(r.figures[name], "rb").read())
