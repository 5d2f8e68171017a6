"""stxcat pretrain / finetune / evaluate / models on tiny simulated LAMOST and DESI releases."""

from __future__ import annotations

import json

import pytest
from astropy.io import fits
from click.testing import CliRunner

from catalog_tool.cli import main

FAST = ["--hidden", "16,8", "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--threads", "1"]


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    from catalog_tool.sim.desi import simulate_desi
    from catalog_tool.sim.lamost import simulate_lamost

    root = tmp_path_factory.mktemp("cli-sims")
    lam = simulate_lamost(root / "lam", n=40, seed=1)
    desi = simulate_desi(root / "desi", pixels=1, per_pixel=40, seed=2, resolution=False)
    return {"root": root, "lam": (root / "lam" / "spectra", lam.truth), "desi": (root / "desi", desi.truth)}


@pytest.fixture(scope="module")
def chain(releases):
    """pretrain on LAMOST, then fine-tune with the adapter on DESI, through the CLI."""
    root, (lam, lam_truth), (desi, desi_truth) = releases["root"], releases["lam"], releases["desi"]
    r = CliRunner()
    pre = r.invoke(main, ["pretrain", str(lam), "--labels", str(lam_truth), "--label", "FEH", "--label", "LOGG",
                          "--out", str(root / "pre"), "--ensemble", "2", *FAST])
    ft = r.invoke(main, ["finetune", str(root / "pre"), str(desi), "--labels", str(desi_truth), "--method", "adapter",
                         "--out", str(root / "ft"), *[a for a in FAST if a not in ("--hidden", "16,8")]])
    return {"pre": pre, "ft": ft, **releases}


def test_pretrain_writes_a_verified_bundle_with_log_and_provenance(chain):
    assert chain["pre"].exit_code == 0, chain["pre"].output
    root = chain["root"]
    man = json.loads((root / "pre" / "manifest.json").read_text())
    assert [lab["name"] for lab in man["labels"]] == ["FEH", "LOGG"]
    assert man["architecture"]["mlp"]["hidden"] == [16, 8] and man["ensemble_size"] == 2
    assert man["grid"]["npix"] == 1462 and man["architecture"]["mlp"]["n_in"] == 1462
    assert man["provenance"]["training_data"]["n_spectra"] > 30
    assert man["provenance"]["seed"] == 0 and "pretrain" in man["provenance"]["command"]
    log = [json.loads(s) for s in (root / "pre" / "training_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 * 2 * 2  # members x per-label networks x epochs
    assert {r["labels"] for r in log} == {"FEH", "LOGG"}
    # a systematic error floor per label, fitted on the validation split
    floor = man["uncertainty"]["floor"]
    assert set(floor) == {"FEH", "LOGG"} and all(v >= 0 for v in floor.values())
    assert "validation stars" in man["uncertainty"]["fitted_on"]


def test_finetune_records_its_parent(chain):
    assert chain["ft"].exit_code == 0, chain["ft"].output
    root = chain["root"]
    pre = json.loads((root / "pre" / "manifest.json").read_text())
    ft = json.loads((root / "ft" / "manifest.json").read_text())
    assert ft["architecture"]["finetune"] == {"method": "adapter", "head_hidden": 32}
    assert ft["provenance"]["training_data"]["parent"]["sha256"] == pre["weights"]["sha256"]
    assert "method adapter" in chain["ft"].output
    assert set(ft["uncertainty"]["floor"]) == {"FEH", "LOGG"}


def test_evaluate_writes_tables_and_plots(chain):
    root, (desi, truth) = chain["root"], chain["desi"]
    res = CliRunner().invoke(main, ["evaluate", str(root / "ft"), str(desi), "--labels", str(truth),
                                    "--out", str(root / "ev"), "--threads", "1"])
    assert res.exit_code == 0, res.output
    md = (root / "ev" / "metrics.md").read_text()
    assert "| FEH | all |" in md and "| LOGG | [Fe/H] < -1 |" in md and "z_scatter" in md
    with fits.open(root / "ev" / "metrics.fits", checksum=True) as hdul:
        assert hdul["METRICS"].data["LABEL"].tolist()[:3] == ["FEH"] * 3
        assert len(hdul["CALIBRATION"].data) == 2 * 5
    for png in ("pred_vs_ref", "residual_vs_feh", "residual_vs_snr"):
        assert (root / "ev" / f"{png}.png").stat().st_size > 1000


def test_models_lists_bundles_and_flags_a_tampered_one(chain, tmp_path):
    root = chain["root"]
    r = CliRunner().invoke(main, ["models", str(root / "pre"), str(root / "ft"), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    given = [row for row in rows if not row["bundle"].startswith("bundled:")]
    assert [row["method"] for row in given] == ["zero-shot", "adapter"]
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(root / "pre", bad)
    w = bad / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    r = CliRunner().invoke(main, ["models", str(bad)])
    assert r.exit_code == 1 and "UNUSABLE" in r.output and "sha256" in r.output


def test_cli_errors_are_one_line(chain):
    root, (lam, truth) = chain["root"], chain["lam"]
    r = CliRunner().invoke(main, ["pretrain", str(lam), "--labels", str(truth), "--label", "FEH",
                                  "--out", str(root / "pre"), *FAST])
    assert r.exit_code == 1 and "already holds a bundle" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["pretrain", str(lam), "--labels", str(truth), "--label", "FEH",
                                  "--out", str(root / "x"), "--hidden", "16,a"])
    assert r.exit_code == 1 and "--hidden must be comma-separated integers" in r.output
    r = CliRunner().invoke(main, ["finetune", str(root / "pre"), str(lam), "--labels", str(truth), "--label", "TEFF",
                                  "--method", "full", "--out", str(root / "y"), "--epochs", "1"])
    assert r.exit_code == 1 and "not outputs of bundle" in r.output
    r = CliRunner().invoke(main, ["evaluate", "no-such-model", str(lam), "--labels", str(truth), "--out", str(root / "z")])
    assert r.exit_code == 1 and "no model bundle folder at 'no-such-model'" in r.output
