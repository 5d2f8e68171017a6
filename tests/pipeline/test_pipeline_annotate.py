"""stxcat annotate end to end on simulated releases: rows, selection, flags, schedulers, layout."""

from __future__ import annotations

import os
import subprocess

import fitsio
import numpy as np
import pytest
from click.testing import CliRunner

from catalog_tool.cli import main
from catalog_tool.vac.flags import FLAG_BITS

from pipeline_helpers import LABELS, assert_same_rows, read_table, run_annotate

NOT_STAR = 1 << next(b.bit for b in FLAG_BITS if b.name == "NOT_STAR")


def _key(t):
    return [(int(i), str(s).strip(), str(p).strip()) for i, s, p in zip(t["TARGETID"], t["SURVEY"], t["PROGRAM"])]


def test_desi_vac_has_every_target_once_and_estimates_only_stars(reference_vac, desi_release, tiny_bundle):
    vac = read_table(reference_vac)
    truth = fitsio.read(desi_release.truth)
    kind = np.char.strip(truth["KIND"].astype(str))
    targets = truth[(kind != "sky") & (kind != "unassigned")]
    assert (kind == "sky").sum() > 0 and (kind == "unassigned").sum() > 0  # the test data has both
    # one row per (TARGETID, SURVEY, PROGRAM), exactly the targets, none of the sky/unassigned fibres
    keys = _key(vac)
    assert len(set(keys)) == len(keys) == len(targets)
    assert set(keys) == set(_key(targets))
    # rows sorted by HEALPix
    assert np.all(np.diff(vac["HEALPIX"]) >= 0)
    truth_kind = dict(zip(truth["TARGETID"].tolist(), kind))
    is_star = np.array([truth_kind[t] == "star" for t in vac["TARGETID"].tolist()])
    assert 0 < (~is_star).sum() < len(vac)
    # non-stars: NOT_STAR, NaN labels, FLAG_BAD
    for name in LABELS:
        assert np.all(np.isnan(vac[name][~is_star])), name
        assert np.all(np.isnan(vac[f"{name}_ERR"][~is_star])), name
        assert np.all(np.isfinite(vac[name][is_star])), name
        assert np.all(vac[f"{name}_ERR"][is_star] > 0), name
    assert np.all(vac["FLAGS"][~is_star] & NOT_STAR)
    assert not np.any(vac["FLAGS"][is_star] & NOT_STAR)
    assert np.all(vac["FLAG_BAD"][~is_star])
    # the estimates sit in the training domain's neighbourhood (a tiny, barely trained model)
    assert np.all((vac["TEFF"][is_star] > 3000) & (vac["TEFF"][is_star] < 8000))
    # provenance of the model and the redrock columns came through
    from catalog_tool.models.bundle import load_bundle

    hdr = fitsio.read_header(reference_vac, ext="STELLAR_PARAMS")
    assert hdr["MODEL"] == "tiny" and hdr["MODELSHA"] == load_bundle(tiny_bundle).sha256
    assert hdr["DEVICE"] == "cpu" and os.path.abspath(desi_release.out) in hdr["INPUT"]
    assert set(np.char.strip(vac["SPECTYPE"].astype(str))) >= {"STAR", "GALAXY"}


def test_lamost_folder_and_mixed_run(tmp_path, lamost_release, desi_release, tiny_bundle, reference_vac):
    spectra = os.path.join(lamost_release.out, "spectra")
    summary = run_annotate([spectra], tmp_path / "lam.fits", tiny_bundle)
    assert summary.ok
    lam = read_table(tmp_path / "lam.fits")
    truth = fitsio.read(lamost_release.truth)
    assert sorted(lam["TARGETID"].tolist()) == sorted(truth["TARGETID"].tolist())
    assert set(np.char.strip(lam["SURVEY"].astype(str))) == {"lamost"}
    kind = dict(zip(truth["TARGETID"].tolist(), np.char.strip(truth["KIND"].astype(str))))
    star = np.array([kind[t] == "star" for t in lam["TARGETID"].tolist()])
    assert 0 < (~star).sum() < len(lam)
    assert np.all(np.isnan(lam["FEH"][~star])) and np.all(lam["FLAGS"][~star] & NOT_STAR)
    assert np.all(np.isfinite(lam["FEH"][star]))

    # both surveys in one run: the union of the two VACs, each row unchanged
    run_annotate([desi_release.out, spectra], tmp_path / "mix.fits", tiny_bundle, partition_size=30)
    mix = read_table(tmp_path / "mix.fits")
    desi = read_table(reference_vac)
    assert len(mix) == len(desi) + len(lam)
    assert np.all(np.diff(mix["HEALPIX"]) >= 0)
    is_lamost = np.char.strip(mix["SURVEY"].astype(str)) == "lamost"
    for name in ("TARGETID", "FEH", "TEFF", "FLAGS"):
        order = np.argsort(mix["TARGETID"][~is_lamost])
        assert np.array_equal(mix[name][~is_lamost][order], desi[name][np.argsort(desi["TARGETID"])],
                              equal_nan=True), name
        order = np.argsort(mix["TARGETID"][is_lamost])
        assert np.array_equal(mix[name][is_lamost][order], lam[name][np.argsort(lam["TARGETID"])],
                              equal_nan=True), name


@pytest.mark.parametrize("scheduler", ["synchronous", "processes"])
def test_schedulers_give_identical_vacs(tmp_path, scheduler, desi_release, tiny_bundle, reference_vac):
    out = tmp_path / f"{scheduler}.fits"
    run_annotate([desi_release.out], out, tiny_bundle, partition_size=30, scheduler=scheduler, workers=2)
    assert_same_rows(read_table(out), read_table(reference_vac))


def test_deterministic_and_batch_size_independent(tmp_path, desi_release, tiny_bundle, reference_vac):
    ref = read_table(reference_vac)
    # same settings again: identical rows
    run_annotate([desi_release.out], tmp_path / "again.fits", tiny_bundle, partition_size=30)
    assert_same_rows(read_table(tmp_path / "again.fits"), ref)
    # inference in chunks of 7 (not a divisor of any partition's star count) and of 4096 (one chunk)
    for bs in (7, 4096):
        out = tmp_path / f"bs{bs}.fits"
        run_annotate([desi_release.out], out, tiny_bundle, partition_size=30, batch_size=bs)
        got = read_table(out)
        assert np.array_equal(got["TARGETID"], ref["TARGETID"])
        for name in LABELS + [f"{n}_ERR" for n in LABELS]:
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-5 * np.nanmax(np.abs(ref[name])),
                                       equal_nan=True, err_msg=name)
        assert np.array_equal(got["FLAGS"], ref["FLAGS"])


def test_cli_per_pixel_files_in_desi_layout(tmp_path, desi_release, tiny_bundle):
    out = tmp_path / "vac.fits"
    res = CliRunner().invoke(main, ["annotate", desi_release.out, "--out", str(out), "--model", tiny_bundle,
                                    "--per-pixel", "--no-progress", "--partition-size", "45"])
    assert res.exit_code == 0, res.output
    assert "per-pixel" in res.output
    vac = read_table(out)
    pixels = np.unique(vac["HEALPIX"])
    assert len(pixels) == 3
    found = 0
    for root, _, names in os.walk(tmp_path / "healpix"):
        for name in names:
            found += 1
            pixel = int(os.path.basename(root))
            rel = os.path.relpath(root, tmp_path).split(os.sep)
            assert rel == ["healpix", "main", "bright", str(pixel // 100), str(pixel)]
            assert str(pixel) in name and name.endswith(".fits")
            part = read_table(os.path.join(root, name))
            assert np.all(part["HEALPIX"] == pixel)
            assert np.array_equal(part["TARGETID"], vac["TARGETID"][vac["HEALPIX"] == pixel])
    assert found == len(pixels)


def test_fitsverify_accepts_the_vac(reference_vac):
    res = subprocess.run(["fitsverify", "-q", reference_vac], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("verification OK"), res.stdout


def test_empty_release_is_one_line_error(tmp_path, tiny_bundle):
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(main, ["annotate", str(tmp_path / "empty"), "--out", str(tmp_path / "v.fits"),
                                    "--model", tiny_bundle, "--no-progress"])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no usable spectra" in lines[0], res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "v.fits").exists()


def test_every_star_without_estimate_is_flagged_bad(tiny_bundle, desi_release, tmp_path):
    """A star row with a NaN label always carries a bad bit; a star whose pixels are all masked
    gets NOT_ESTIMATED as well as BAD_PIXELS."""
    import shutil

    rel = tmp_path / "rel"
    shutil.copytree(desi_release.out, rel)
    coadd = sorted(rel.rglob("coadd-*.fits"))[0]
    with fitsio.FITS(str(coadd), "rw") as f:
        fm = f["FIBERMAP"].read(columns=["TARGETID"])
        truth = fitsio.read(desi_release.truth)
        stars = truth["TARGETID"][np.char.strip(truth["KIND"].astype(str)) == "star"]
        row = int(np.flatnonzero(np.isin(fm["TARGETID"], stars))[0])
        ivar = f["B_IVAR"].read()
        ivar[row] = 0
        f["B_IVAR"].write(ivar)
    dead = int(fm["TARGETID"][row])
    out = tmp_path / "vac.fits"
    res = CliRunner().invoke(main, ["annotate", str(rel), "--out", str(out), "--model", str(tiny_bundle),
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    rows = fitsio.read(str(out), "STELLAR_PARAMS")
    nan = ~np.isfinite(rows["FEH"])
    assert np.all(rows["FLAG_BAD"][nan])
    bits = {f.name: f.value for f in FLAG_BITS}
    (k,) = np.flatnonzero(rows["TARGETID"] == dead)
    assert np.isnan(rows["FEH"][k])
    assert rows["FLAGS"][k] & bits["NOT_ESTIMATED"] and rows["FLAGS"][k] & bits["BAD_PIXELS"]
