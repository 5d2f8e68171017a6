"""stxcat calibrate: planted zero points and trends are recovered, the bundle keeps its weights, the
calibration is validated on load and applied by predict/annotate/evaluate, and too small overlaps,
recalibration and resumes across calibrations are refused in one line."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import fitsio
import numpy as np
import pytest
from click.testing import CliRunner

from catalog_tool.cli import main
from catalog_tool.errors import BundleError, ConfigError
from catalog_tool.models import calibration as cal
from catalog_tool.models.bundle import load_bundle
from catalog_tool.models.infer import predict
from catalog_tool.preprocess.grid import ModelGrid
from catalog_tool.preprocess.settings import PreprocessSettings
from catalog_tool.sim.desi import simulate_desi
from catalog_tool.train.calibrate import calibrate_label, fit_trend, min_stars, run_calibrate
from catalog_tool.train.data import load_labelled
from catalog_tool.train.labels import LabelOptions

from label_table_factory import APOGEE_DTYPE, write_table
from tiny_bundle_factory import make_tiny_bundle

APOGEE = LabelOptions(preset="apogee")


# ---------------------------------------------------------------------------------------------
# the fit, on arrays
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("coef", [[0.15], [0.12, 0.08], [-0.05, 0.1, 0.04]])
def test_fit_trend_recovers_planted_coefficients(coef):
    rng = np.random.default_rng(len(coef))
    n = 3000
    ref = rng.uniform(-2.5, 0.5, n)
    pivot = -0.8
    pred = ref + sum(c * (ref - pivot) ** k for k, c in enumerate(coef)) + rng.normal(0, 0.1, n)
    bad = rng.choice(n, 150, replace=False)
    pred[bad] += rng.choice([-1.5, 1.5], 150)  # 5% catastrophic outliers: Huber down-weights them
    fit = fit_trend(pred=pred, ref=ref, degree=len(coef) - 1, pivot=pivot)
    err = np.asarray(fit["coef_err"])
    assert np.all(np.abs(np.asarray(fit["coef"]) - coef) < 4 * err), (fit["coef"], coef, err)
    assert np.all(err < 0.01) and fit["n"] == n and fit["n_downweighted"] >= 150
    assert fit["domain"] == [pytest.approx(ref.min()), pytest.approx(ref.max())]


def test_noise_in_the_predictions_makes_no_spurious_trend():
    # predicted = reference + noise and nothing else: a fit in the prediction would find a slope of
    # about sigma**2 / (sigma**2 + spread**2) (regression dilution) and shrink calibrated values
    rng = np.random.default_rng(7)
    ref = rng.normal(-0.5, 0.5, 4000)
    pred = ref + rng.normal(0, 0.25, ref.size)
    fit = fit_trend(pred=pred, ref=ref, degree=1)
    assert abs(fit["coef"][1]) < 4 * fit["coef_err"][1] and abs(fit["coef"][1]) < 0.03
    naive = np.polyfit(pred, pred - ref, 1)[0]
    assert naive == pytest.approx(0.25 ** 2 / (0.25 ** 2 + 0.5 ** 2), abs=0.03)  # what we avoid


def _entry(coef, pivot=0.0, domain=(-2.0, 0.5)):
    return {"degree": len(coef) - 1, "coef": list(coef), "pivot": pivot, "domain": list(domain), "n": 100}


@pytest.mark.parametrize("coef", [[0.2], [0.1, 0.3], [0.05, -0.2, 0.15]])
def test_invert_is_the_inverse_of_forward_inside_and_outside_the_domain(coef):
    e = _entry(coef, pivot=-0.7)
    t = np.linspace(-4.0, 2.0, 601)  # well beyond the domain on both sides
    np.testing.assert_allclose(cal.invert(e, cal.forward(e, t)), t, atol=1e-9)
    v = np.array([np.nan, 0.0])
    assert np.isnan(cal.invert(e, v)[0])
    outside = t > 0.5  # the trend is held, not extrapolated: a constant shift there
    np.testing.assert_allclose(cal.forward(e, t[outside]) - t[outside], cal.correction(e, 0.5))


def test_errors_scale_with_the_slope_of_the_inverse():
    manifest = {"calibration": {"labels": {"FEH": _entry([0.1, 0.25], pivot=-1.0)}}}
    values = np.array([[-1.0, 5000.0], [3.0, 6000.0]])  # t + 0.1 + 0.25 (t + 1) = -1: t = -1.08
    out, scale = cal.apply_calibration(manifest, ["FEH", "TEFF"], values)
    assert out[0, 0] == pytest.approx(-1.08) and scale[0, 0] == pytest.approx(1 / 1.25)
    assert scale[1, 0] == 1.0                          # beyond the domain: a pure shift
    np.testing.assert_array_equal(out[:, 1], values[:, 1])  # TEFF not calibrated: untouched


def test_floor_makes_pulls_unit_and_leaves_the_reference_errors_out():
    rng = np.random.default_rng(3)
    n = 4000
    ref = rng.uniform(-2, 0.4, n)
    ref_err = np.full(n, 0.05)
    err = rng.uniform(0.03, 0.08, n)                  # what the network says
    true_extra = 0.09                                   # what it does not know
    pred = ref + 0.1 + rng.normal(0, 1, n) * np.sqrt(err ** 2 + true_extra ** 2 + ref_err ** 2)
    e = calibrate_label(pred=pred, ref=ref, err=err, ref_err=ref_err, degree=0, floor_before=0.02)
    assert e["coef"][0] == pytest.approx(0.1, abs=4 * e["coef_err"][0])
    assert e["floor"] == pytest.approx(true_extra, rel=0.1)      # the reference's 0.05 is not ours
    assert e["after"]["z_robust_sigma"] == pytest.approx(1.0, abs=0.02)
    assert e["before"]["z_robust_sigma"] > 1.2 and abs(e["after"]["bias"]) < 0.01
    assert e["floor_before"] == 0.02 and e["n"] == n


def test_a_trend_that_undoes_the_predictions_is_refused():
    rng = np.random.default_rng(4)
    ref = rng.uniform(-2, 0.5, 500)
    pred = np.full_like(ref, -0.5) + rng.normal(0, 0.01, ref.size)  # predictions ignore the label
    with pytest.raises(ConfigError, match="predictions barely follow the reference"):
        calibrate_label(pred=pred, ref=ref, err=np.full_like(ref, 0.05), ref_err=None, degree=1, name="FEH")


def test_minimum_overlap():
    assert [min_stars(t) for t in (0, 1, 2)] == [20, 20, 30]


# ---------------------------------------------------------------------------------------------
# end to end, with a tiny bundle on a simulated DESI release and an allStar-style table
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A release, a tiny bundle, its raw predictions on the release's stars and their positions."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("calib")
    rel = simulate_desi(root / "rel", pixels=2, per_pixel=60, seed=31, resolution=False, checksum=False)
    bundle_path = make_tiny_bundle(root / "tiny", seed=5, command="pytest tests/models/test_calibrate.py")
    bundle = load_bundle(bundle_path)
    truth = fitsio.read(rel.truth)
    ls, _ = load_labelled([rel.out], labels_path=rel.truth, names=["FEH", "TEFF"], grid=ModelGrid(),
                          settings=PreprocessSettings())
    raw = predict(bundle, flux=ls.flux, ivar=ls.ivar, calibrated=False)
    by_id = {int(t): r for t, r in zip(truth["TARGETID"], truth)}
    rows = [by_id[int(t)] for t in ls.targetid]
    return {"root": root, "release": rel.out, "bundle": bundle_path, "raw": raw, "ls": ls,
            "ra": np.array([r["TARGET_RA"] for r in rows]), "dec": np.array([r["TARGET_DEC"] for r in rows])}


def _allstar(world, path, *, feh, teff, snr=None, keep=None):
    n = len(feh)
    t = np.zeros(n, APOGEE_DTYPE)
    t["APOGEE_ID"] = [f"2M{i:08d} " for i in range(n)]
    t["RA"], t["DEC"] = world["ra"], world["dec"]
    t["FE_H"], t["TEFF"], t["LOGG"] = feh, teff, 4.0
    t["FE_H_ERR"], t["TEFF_ERR"] = 0.005, 5.0
    t["SNR"] = np.arange(n) + 100.0 if snr is None else snr
    t = t if keep is None else t[keep]
    return write_table(path, t)


def _planted(world, *, c0, c1, x0, noise_frac=0.02, seed=0):
    """Reference labels whose relation to the raw predictions is v = t + c0 + c1 (t - x0) + noise."""
    rng = np.random.default_rng(seed)
    j = world["raw"].label_names.index("FEH")
    v = world["raw"].values[:, j].astype(float)
    t = x0 + (v - c0 - x0) / (1.0 + c1)
    return t + rng.normal(0, noise_frac * np.std(t), t.size), v


def test_calibrate_recovers_a_planted_zero_point_and_trend(world, tmp_path):
    c0, c1, x0 = 0.3, 0.2, -0.5
    feh, v = _planted(world, c0=c0, c1=c1, x0=x0)
    jt = world["raw"].label_names.index("TEFF")
    teff = world["raw"].values[:, jt] - 150.0  # a pure zero point on TEFF
    table = _allstar(world, tmp_path / "allStar.fits", feh=feh, teff=teff)
    out = tmp_path / "tiny-cal"
    r = run_calibrate(world["bundle"], [world["release"]], labels_path=table, out=out, label_options=APOGEE,
                      names=["FEH", "TEFF"], trend=1, device="cpu")
    e = r.calibration["labels"]["FEH"]
    p = e["pivot"]
    want = [c0 + c1 * (p - x0), c1]                   # the planted relation, about the fit's pivot
    err = np.asarray(e["coef_err"])
    assert np.all(np.abs(np.asarray(e["coef"]) - want) < 4 * err + 1e-9), (e["coef"], want, err)
    assert e["n"] == len(feh) and r.n_spectra == len(feh)
    assert abs(e["after"]["bias"]) < 0.1 * abs(e["before"]["bias"])
    te = r.calibration["labels"]["TEFF"]
    assert te["coef"][0] == pytest.approx(150.0, abs=4 * te["coef_err"][0] + 1e-6)
    assert te["coef"][1] == pytest.approx(0.0, abs=4 * te["coef_err"][1] + 1e-9)
    # same weights, byte for byte; a new manifest identity; the floor now the overlap's
    src, dst = (open(os.path.join(p_, "weights.safetensors"), "rb").read() for p_ in (world["bundle"], out))
    assert hashlib.sha256(src).digest() == hashlib.sha256(dst).digest()
    new, old = load_bundle(out), load_bundle(world["bundle"])
    assert new.sha256 == old.sha256 and cal.manifest_sha256(new.manifest) != cal.manifest_sha256(old.manifest)
    assert new.manifest["uncertainty"]["floor"]["FEH"] == e["floor"] and new.name == "tiny-cal"
    assert r.calibration["table"]["sha256"] == hashlib.sha256(open(table, "rb").read()).hexdigest()
    assert r.calibration["parent"] == {"name": old.name, "manifest_sha256": cal.manifest_sha256(old.manifest)}
    # predict() applies it: the calibrated values are the inverse of the fitted relation
    ls = world["ls"]
    got = predict(new, flux=ls.flux, ivar=ls.ivar)
    j = new.label_names.index("FEH")
    np.testing.assert_allclose(got.values[:, j], cal.invert(e, v), atol=1e-5)
    np.testing.assert_allclose(got.values[:, j], feh, atol=6 * 0.02 * np.std(feh) + 1e-4)
    raw = predict(new, flux=ls.flux, ivar=ls.ivar, calibrated=False)
    np.testing.assert_array_equal(raw.values, world["raw"].values)
    k = new.label_names.index("LOGG")  # not calibrated: untouched
    np.testing.assert_array_equal(got.values[:, k], world["raw"].values[:, k])


def test_annotate_and_evaluate_see_the_calibration(world, tmp_path):
    jt = world["raw"].label_names.index("TEFF")
    j = world["raw"].label_names.index("FEH")
    table = _allstar(world, tmp_path / "allStar.fits", feh=world["raw"].values[:, j] - 0.25,
                     teff=world["raw"].values[:, jt])
    out = tmp_path / "cal0"
    runner = CliRunner()
    res = runner.invoke(main, ["calibrate", world["bundle"], world["release"], "--labels", table,
                               "--label-preset", "apogee", "--label", "FEH", "-o", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "FEH:" in res.output and "zero point +0.25" in res.output and "unchanged" in res.output
    vacs = {}
    for name, model in (("raw", world["bundle"]), ("cal", str(out))):
        path = str(tmp_path / f"{name}.fits")
        res = runner.invoke(main, ["annotate", world["release"], "--out", path, "--model", model, "--no-progress"])
        assert res.exit_code == 0, res.output
        vacs[name] = (fitsio.read(path), fitsio.read_header(path, ext="STELLAR_PARAMS"), fitsio.read_header(path, 0))
    (a, ha, _), (b, hb, hb0) = vacs["raw"], vacs["cal"]
    ok = np.isfinite(a["FEH"])
    np.testing.assert_allclose(a["FEH"][ok] - b["FEH"][ok], 0.25, atol=2e-5)     # every star shifts
    np.testing.assert_array_equal(a["TEFF"][ok], b["TEFF"][ok])
    assert ha["CALIB"] is False and hb["CALIB"] is True and hb0["CALIB"] is True
    assert hb["MODELSHA"] == ha["MODELSHA"] and hb["MANIFSHA"] != ha["MANIFSHA"]
    assert hb["CALIBN"] == len(world["ls"]) and hb["CALIBLBL"] == "FEH" and hb["CALIBTAB"] == "allStar.fits"
    assert hb["CALIBSHA"] == hashlib.sha256(open(table, "rb").read()).hexdigest()
    assert json.loads(hb["CALIBJS"])["FEH"]["coef"][0] == pytest.approx(0.25, abs=1e-4)
    res = runner.invoke(main, ["evaluate", str(out), world["release"], "--labels", table, "--label-preset",
                               "apogee", "--out", str(tmp_path / "eval"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "Values calibrated against allStar.fits" in res.output
    feh_all = [line for line in res.output.splitlines() if line.startswith("| FEH | all")][0]
    assert abs(float(feh_all.split("|")[4])) < 1e-3  # bias column: zero after the calibration
    res = runner.invoke(main, ["models", str(out)])
    assert "calib    FEH (trend 0" in res.output


def test_too_small_overlap_is_refused_in_one_line(world, tmp_path):
    j = world["raw"].label_names.index("FEH")
    feh = world["raw"].values[:, j] - 0.1
    table = _allstar(world, tmp_path / "few.fits", feh=feh, teff=np.full(feh.size, np.nan), keep=np.arange(25))
    out = tmp_path / "never"
    res = CliRunner().invoke(main, ["calibrate", world["bundle"], world["release"], "--labels", table,
                                    "--label-preset", "apogee", "--label", "FEH", "--trend", "2", "-o", str(out)])
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    assert "overlap too small to calibrate FEH (25 stars): --trend 2 needs at least 30 stars" in lines[0]
    assert not out.exists()
    with pytest.raises(ConfigError, match=r"TEFF \(0 stars\)"):  # a label without any reference value
        run_calibrate(world["bundle"], [world["release"]], labels_path=table, out=out, label_options=APOGEE,
                      names=["FEH", "TEFF"], trend=0, device="cpu")


def test_recalibration_needs_replace_and_starts_from_raw_values(world, tmp_path):
    j = world["raw"].label_names.index("FEH")
    t1 = _allstar(world, tmp_path / "a.fits", feh=world["raw"].values[:, j] - 0.1, teff=np.full(len(world["ls"]), 5000.0))
    t2 = _allstar(world, tmp_path / "b.fits", feh=world["raw"].values[:, j] + 0.2, teff=np.full(len(world["ls"]), 5000.0))
    kw = dict(label_options=APOGEE, names=["FEH"], device="cpu")
    first = tmp_path / "first"
    run_calibrate(world["bundle"], [world["release"]], labels_path=t1, out=first, **kw)
    with pytest.raises(ConfigError, match="already calibrated .* pass --replace"):
        run_calibrate(first, [world["release"]], labels_path=t2, out=tmp_path / "second", **kw)
    with pytest.raises(ConfigError, match="is the bundle being calibrated"):
        run_calibrate(first, [world["release"]], labels_path=t2, out=first, replace=True, **kw)
    second = run_calibrate(first, [world["release"]], labels_path=t2, out=tmp_path / "second", replace=True, **kw)
    e = second.calibration["labels"]["FEH"]
    assert e["coef"][0] == pytest.approx(-0.2, abs=1e-5)      # not -0.2 - (-0.1): never chained
    assert second.calibration["parent"]["name"] == load_bundle(world["bundle"]).name
    fresh = load_bundle(first).manifest["calibration"]["labels"]["FEH"]
    assert e["floor_before"] == fresh["floor_before"]          # the uncalibrated bundle's floor
    with pytest.raises(ConfigError, match="already exists"):
        run_calibrate(world["bundle"], [world["release"]], labels_path=t1, out=first, **kw)


def test_resume_refuses_to_mix_calibrated_and_raw_partitions(world, tmp_path):
    j = world["raw"].label_names.index("FEH")
    table = _allstar(world, tmp_path / "a.fits", feh=world["raw"].values[:, j] - 0.1,
                     teff=np.full(len(world["ls"]), 5000.0))
    calibrated = tmp_path / "c"
    run_calibrate(world["bundle"], [world["release"]], labels_path=table, out=calibrated, label_options=APOGEE,
                  names=["FEH"], device="cpu")
    vac = str(tmp_path / "vac.fits")
    runner = CliRunner()
    res = runner.invoke(main, ["annotate", world["release"], "--out", vac, "--model", world["bundle"], "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["annotate", world["release"], "--out", vac, "--model", str(calibrated), "--resume",
                               "--no-progress"])
    assert res.exit_code == 1 and "settings changed (calibrated_manifest)" in res.output


# ---------------------------------------------------------------------------------------------
# the manifest entry is validated on load
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def calibrated(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("cal-ok")
    j = world["raw"].label_names.index("FEH")
    feh, _ = _planted(world, c0=0.1, c1=0.1, x0=-0.5)
    table = _allstar(world, root / "a.fits", feh=feh, teff=world["raw"].values[:, 2])
    run_calibrate(world["bundle"], [world["release"]], labels_path=table, out=root / "ok", label_options=APOGEE,
                  names=["FEH", "TEFF"], trend=1, device="cpu")
    assert j == 0
    return root / "ok"


def _edit(path, tmp_path, change):
    dst = tmp_path / "edited"
    shutil.copytree(path, dst)
    m = json.loads((dst / "manifest.json").read_text())
    change(m)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


@pytest.mark.parametrize("change,message", [
    (lambda m: m.update(calibration=[1, 2]), "entry 'calibration' must be an object"),
    (lambda m: m["calibration"].update(version=2), "calibration version 2"),
    (lambda m: m["calibration"].update(labels={}), "lists no labels"),
    (lambda m: m["calibration"]["labels"].update(MGFE=m["calibration"]["labels"]["FEH"]),
     "calibration of MGFE, which the bundle does not predict"),
    (lambda m: m["calibration"]["labels"]["FEH"].update(degree=3), "degree must be an integer 0..2"),
    (lambda m: m["calibration"]["labels"]["FEH"].update(degree=True), "degree must be an integer"),
    (lambda m: m["calibration"]["labels"]["FEH"].update(coef=[0.1]), "coef must be a list of 2 numbers"),
    (lambda m: m["calibration"]["labels"]["FEH"].update(coef=[0.1, "x"]), "coef must hold finite numbers"),
    (lambda m: m["calibration"]["labels"]["FEH"]["coef"].__setitem__(1, float("nan")), "finite"),
    (lambda m: m["calibration"]["labels"]["FEH"].update(domain=[1.0, -1.0]), "low < high"),
    (lambda m: m["calibration"]["labels"]["FEH"].update(pivot=None), "pivot must be a finite number"),
    (lambda m: m["calibration"]["labels"]["FEH"].update(n=0), "n (stars fitted) must be a positive integer"),
    (lambda m: m["calibration"]["labels"]["FEH"].update(floor=-1), "floor must be a finite number >= 0"),
    (lambda m: m["calibration"]["labels"]["FEH"]["coef"].__setitem__(1, -0.9), "predictions must rise"),
    (lambda m: m["calibration"]["labels"]["FEH"].update(degree=2, coef=[0.0, 0.0, -1e6]), "predictions must rise"),
    (lambda m: m["calibration"].pop("table"), "does not record its label table"),
    (lambda m: m.pop("uncertainty"), "needs an 'uncertainty.floor' object"),
])
def test_malformed_calibration_is_refused_on_load(calibrated, tmp_path, change, message):
    load_bundle(calibrated)  # the unedited one loads
    with pytest.raises(BundleError, match="calibration|uncertainty") as err:
        load_bundle(_edit(calibrated, tmp_path, change))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bundles_without_calibration_still_load(world):
    b = load_bundle(world["bundle"])
    assert "calibration" not in b.manifest and not cal.is_calibrated(b.manifest)
    assert cal.vac_cards(b.manifest)[1] == ("CALIB", False, "values calibrated against reference labels")
