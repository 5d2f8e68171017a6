"""The VAC's values equal what the library gives outside the pipeline.

Every other pipeline test compares VACs with VACs; these read the input files, preprocess the stars
and call :func:`catalog_tool.models.infer.predict` directly, and require each label, ``_ERR``,
``_ENS_STD``, ``SNR``, ``FLAGS`` (and the columns copied from the files) of every VAC row to be
the value computed here. A pipeline that swaps two columns, or feeds one diagnostic into another's
flag, fails.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from catalog_tool.io import desi, lamost
from catalog_tool.models.bundle import load_bundle
from catalog_tool.models.infer import predict
from catalog_tool.preprocess.chain import preprocess_batch
from catalog_tool.preprocess.grid import ModelGrid
from catalog_tool.preprocess.settings import PreprocessSettings
from catalog_tool.select import is_star, is_target
from catalog_tool.vac import flags as fl

from pipeline_helpers import read_table, run_annotate


def _expected(batch, bundle, *, kind, thresholds=fl.DEFAULT_THRESHOLDS) -> dict:
    """VAC values of the targets of ``batch`` (read by the ``kind`` reader), computed with the
    library functions alone."""
    batch = batch.take(np.flatnonzero(is_target(batch.meta)))
    meta, n = batch.meta, len(batch)
    names = bundle.label_names
    star = is_star(meta, kind=kind)
    values = np.full((n, len(names)), np.nan, np.float32)
    errors, ens = values.copy(), values.copy()
    snr = np.full(n, np.nan, np.float32)
    bad_frac, covered, cont_ok = snr.copy(), np.ones(n, bool), np.ones(n, bool)
    idx = np.flatnonzero(star)
    pre = preprocess_batch(batch.take(idx), grid=ModelGrid.from_dict(bundle.grid),
                           settings=PreprocessSettings.from_dict(bundle.preprocess))
    d = pre.diagnostics
    snr[idx], bad_frac[idx], covered[idx], cont_ok[idx] = d["SNR_MEDIAN"], d["BAD_FRAC"], d["COVERED"], d["CONT_OK"]
    ok = idx[d["PREPROC_OK"]]
    pred = predict(bundle, flux=pre.flux[d["PREPROC_OK"]], ivar=pre.ivar[d["PREPROC_OK"]], device="cpu")
    values[ok], errors[ok], ens[ok] = pred.values, pred.errors, pred.ensemble_std
    lo = [s.domain[0] for s in bundle.labels]
    hi = [s.domain[1] for s in bundle.labels]
    lamost_rows = np.char.strip(np.asarray(meta["SURVEY"]).astype(str)) == "lamost"
    zwarn = np.where(lamost_rows, -1, meta.get("ZWARN", np.full(n, -1)))
    fibst = np.where(lamost_rows, -1, meta.get("COADD_FIBERSTATUS", np.full(n, -1)))
    ra, dec = np.asarray(meta["TARGET_RA"]), np.asarray(meta["TARGET_DEC"])
    _, inv, cnt = np.unique(np.asarray(meta["TARGETID"]), return_inverse=True, return_counts=True)
    flags = fl.compute_flags(
        is_star=star, snr=snr, bad_frac=bad_frac, covered=covered, cont_ok=cont_ok,
        pred_in_domain=fl.in_domain(values=values, lo=lo, hi=hi), ensemble_std=ens, label_names=names,
        estimated=np.isfinite(values).all(axis=1), zwarn=zwarn, fiberstatus=fibst,
        redrock_found=meta.get("REDROCK_FOUND"),  # DESI only: the reader's join
        coords_ok=np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90),
        unique_id=cnt[inv.reshape(-1)] == 1 if "REDROCK_FOUND" in meta else None,  # one batch = one DESI file
        thresholds=thresholds)
    out = {"SOURCE": [os.path.basename(s) for s in meta["SOURCE"]], "SOURCE_ROW": meta["ROW"],
           "TARGETID": meta["TARGETID"], "SNR": snr, "FLAGS": flags, "BAD_FRAC": bad_frac,
           "TARGET_RA": meta["TARGET_RA"], "TARGET_DEC": meta["TARGET_DEC"], "HEALPIX": meta["HEALPIX"]}
    for j, name in enumerate(names):
        out[name], out[f"{name}_ERR"], out[f"{name}_ENS_STD"] = values[:, j], errors[:, j], ens[:, j]
    if "Z" in meta:
        out["Z"] = meta["Z"]
    return out


def _rows_by_source(vac) -> dict:
    keys = [(str(s).strip(), int(r)) for s, r in zip(vac["SOURCE"], vac["SOURCE_ROW"])]
    assert len(set(keys)) == len(keys), "a (SOURCE, SOURCE_ROW) appears twice in the VAC"
    return {k: i for i, k in enumerate(keys)}


def _compare(vac, expected: list[dict], names) -> int:
    where = _rows_by_source(vac)
    exp = {k: np.concatenate([np.asarray(e[k]) for e in expected]) for k in expected[0]}
    rows = np.array([where[(s, int(r))] for s, r in zip(exp["SOURCE"], exp["SOURCE_ROW"])])
    assert len(rows) == len(vac), "the VAC has rows the files do not explain"
    got = vac[rows]
    np.testing.assert_array_equal(got["TARGETID"], exp["TARGETID"])
    np.testing.assert_array_equal(got["HEALPIX"], exp["HEALPIX"])
    np.testing.assert_array_equal(got["TARGET_RA"], exp["TARGET_RA"])
    np.testing.assert_array_equal(got["TARGET_DEC"], exp["TARGET_DEC"])
    np.testing.assert_array_equal(got["FLAGS"], exp["FLAGS"])
    np.testing.assert_array_equal(got["FLAG_BAD"], fl.flag_bad(exp["FLAGS"]))
    # preprocessing runs in chunks and inference in batches inside the pipeline: float32 rounding
    np.testing.assert_allclose(got["SNR"], exp["SNR"], rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(got["BAD_FRAC"], exp["BAD_FRAC"], rtol=1e-6, equal_nan=True)
    if "Z" in exp:
        np.testing.assert_array_equal(got["Z"], exp["Z"])
    for name in names:
        for col in (name, f"{name}_ERR"):
            np.testing.assert_allclose(got[col], exp[col], rtol=2e-5, atol=0, equal_nan=True, err_msg=col)
        # the members' spread is a difference of float32 predictions: its rounding scales with the
        # label's size, not with the spread (a spread of 2e-5 dex carries ~1e-8 of rounding)
        scale = float(np.nanmax(np.abs(exp[name]))) if np.isfinite(exp[name]).any() else 0.0
        np.testing.assert_allclose(got[f"{name}_ENS_STD"], exp[f"{name}_ENS_STD"], rtol=2e-5,
                                   atol=2e-6 * scale, equal_nan=True, err_msg=f"{name}_ENS_STD")
    return int(np.isfinite(exp[names[0]]).sum())


def test_desi_vac_values_equal_preprocess_and_predict_outside_the_pipeline(reference_vac, desi_release,
                                                                          tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    coadds = sorted(glob.glob(os.path.join(desi_release.out, "healpix", "**", "coadd-*.fits"), recursive=True))
    # every arm read here: the pipeline reads only those the model needs, which must not matter
    expected = [_expected(desi.read_coadd(p), bundle, kind="desi") for p in coadds]
    vac = read_table(reference_vac)
    estimated = _compare(vac, expected, bundle.label_names)
    assert 0 < estimated < len(vac)
    # the test has teeth: the errors and the ensemble spreads are different numbers
    name = bundle.label_names[0]
    assert not np.allclose(vac[f"{name}_ERR"], vac[f"{name}_ENS_STD"], equal_nan=True)


def test_lamost_vac_values_equal_preprocess_and_predict_outside_the_pipeline(tmp_path, lamost_release,
                                                                            tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    spectra = os.path.join(lamost_release.out, "spectra")
    run_annotate([spectra], tmp_path / "lam.fits", tiny_bundle)
    files = sorted(glob.glob(os.path.join(spectra, "**", "*.fits*"), recursive=True))
    batch, failed = lamost.read_lamost_files(files)
    assert not failed
    vac = read_table(tmp_path / "lam.fits")
    assert 0 < _compare(vac, [_expected(batch, bundle, kind="lamost")], bundle.label_names) < len(vac)


def test_flags_use_the_thresholds_recorded_in_the_plan(tmp_path, monkeypatch, desi_release, tiny_bundle):
    """The plan records the run's thresholds (a change blocks --resume); the tasks must flag with
    them, not with the defaults, and the VAC header must say which were used."""
    import json

    import fitsio

    from catalog_tool.pipeline import partition

    strict = fl.FlagThresholds(min_snr=25.0, max_bad_frac=0.01,
                               max_ensemble_std=(("FEH", 0.02), ("ALPHAFE", 0.002), ("TEFF", 20.0), ("LOGG", 0.02)))
    plain = partition.run_settings

    def run_settings(cfg, bundle):
        return {**plain(cfg, bundle), "thresholds": strict.to_dict()}

    monkeypatch.setattr(partition, "run_settings", run_settings)
    out = tmp_path / "strict.fits"
    run_annotate([desi_release.out], out, tiny_bundle, partition_size=30)
    bundle = load_bundle(tiny_bundle)
    coadds = sorted(glob.glob(os.path.join(desi_release.out, "healpix", "**", "coadd-*.fits"), recursive=True))
    vac = read_table(out)
    _compare(vac, [_expected(desi.read_coadd(p), bundle, kind="desi", thresholds=strict) for p in coadds],
             bundle.label_names)
    bits = {f.name: f.value for f in fl.FLAG_BITS}
    assert np.any(vac["FLAGS"] & bits["ENSEMBLE_DISAGREE"])  # the strict limits bite
    for ext in (0, "STELLAR_PARAMS"):
        assert json.loads(fitsio.read_header(out, ext=ext)["FLAGTHR"]) == strict.to_dict()



def test_rest_frame_model_reads_what_high_velocity_stars_need(tmp_path, desi_release, tiny_bundle):
    """A rest-frame model (with resolution matching): stars at +-2700 km/s shift preprocessing's
    range into the R arm. The pipeline reads the arms preprocessing asks for, so its values equal
    the library's on the whole spectrum; the B arm alone (its choice before) gives other values."""
    import json
    import shutil

    from astropy.io import fits as afits

    model = tmp_path / "rest"
    shutil.copytree(tiny_bundle, model)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["preprocess"].update(rest_frame=True, lsf_match_R=1800.0)
    (model / "manifest.json").write_text(json.dumps(manifest))
    coadd = sorted(glob.glob(os.path.join(desi_release.out, "healpix", "**", "coadd-*.fits"), recursive=True))[0]
    rel = tmp_path / "rel"
    rel.mkdir()
    for src in (coadd, desi.find_redrock(coadd)):
        shutil.copy(src, rel / os.path.basename(src))
    with afits.open(rel / os.path.basename(desi.find_redrock(coadd)), mode="update") as hdul:
        z = hdul["REDSHIFTS"].data["Z"]
        z[:] = np.where(np.arange(len(z)) % 2 == 0, 0.009, -0.009)
    run_annotate([rel], tmp_path / "vac.fits", os.fspath(model), partition_size=1000)
    bundle = load_bundle(model)
    vac = read_table(tmp_path / "vac.fits")
    path = os.fspath(rel / os.path.basename(coadd))
    assert _compare(vac, [_expected(desi.read_coadd(path), bundle, kind="desi")], bundle.label_names) > 0
    with pytest.raises(AssertionError):  # the test has teeth: reading the B arm alone would fail it
        _compare(vac, [_expected(desi.read_coadd(path, arms=("B",)), bundle, kind="desi")], bundle.label_names)


#: The published bits of FLAGS. Written out by hand on purpose: a bit renumbered, renamed, moved in
#: or out of FLAG_BAD, or dropped must fail here, and be a deliberate data-model change.
#: Bits 0-11 as first published; 12-14 added with issue 14/16 (NO_REDROCK, BAD_COORDS, DUPLICATE_ID);
#: INPUT_OUT_OF_DOMAIN (5) and READ_FAILED (10) retired then: never set, numbers kept. 15 added with
#: issue 12 (FILE_MISSING: a --catalog row without its file).
GOLDEN_FLAGS = {
    "NOT_STAR": 0, "LOW_SNR": 1, "BAD_PIXELS": 2, "NOT_COVERED": 3, "CONT_FAIL": 4,
    "INPUT_OUT_OF_DOMAIN": 5, "PRED_OUT_OF_DOMAIN": 6, "ENSEMBLE_DISAGREE": 7, "ZWARN": 8,
    "BAD_FIBERSTATUS": 9, "READ_FAILED": 10, "NOT_ESTIMATED": 11, "NO_REDROCK": 12, "BAD_COORDS": 13,
    "DUPLICATE_ID": 14, "FILE_MISSING": 15,
}
GOLDEN_BAD = {"NOT_STAR", "BAD_PIXELS", "NOT_COVERED", "CONT_FAIL", "PRED_OUT_OF_DOMAIN", "ENSEMBLE_DISAGREE",
              "BAD_FIBERSTATUS", "READ_FAILED", "NOT_ESTIMATED", "DUPLICATE_ID", "FILE_MISSING"}
GOLDEN_RETIRED = {"INPUT_OUT_OF_DOMAIN", "READ_FAILED"}


def test_golden_flag_mapping():
    assert {f.name: f.bit for f in fl.FLAG_BITS} == GOLDEN_FLAGS
    assert {f.name for f in fl.FLAG_BITS if f.bad} == GOLDEN_BAD
    assert {f.name for f in fl.FLAG_BITS if f.retired} == GOLDEN_RETIRED
    assert fl.BAD_MASK == sum(1 << GOLDEN_FLAGS[n] for n in GOLDEN_BAD) == 3805 + (1 << 14) + (1 << 15) == 52957
    cards = {c["name"]: c["value"] for c in fl.header_cards()}
    assert {v: int(k[5:]) for k, v in cards.items() if k.startswith("FLAGB")} == GOLDEN_FLAGS
    assert cards["BADMASK"] == 52957


@pytest.mark.parametrize("name", sorted(GOLDEN_FLAGS))
def test_each_golden_bit_decodes_to_its_name(name):
    assert fl.flag_names(1 << GOLDEN_FLAGS[name]) == [name]
