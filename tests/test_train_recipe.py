"""The bundled model's recipe, end to end on a tiny wheel-shaped library (one epoch, small sets):
it writes a bundle and the metrics the model card is generated from, and never trains on a
held-out star."""

from __future__ import annotations

import importlib.util
import io
import json
import pathlib
import zipfile

import numpy as np
from astropy.io import fits

from catalog_tool.models.bundle import load_bundle
from catalog_tool.sim.library import MILES_DIR, STELIB_DIR
from catalog_tool.sim.specmodel import SpectralModel

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _fits_bytes(flux, crval, cdelt):
    hdu = fits.PrimaryHDU(np.asarray(flux, dtype=np.float32))
    hdu.header.update(CRVAL1=crval, CDELT1=cdelt, CRPIX1=1.0)
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


def _wheel(path: pathlib.Path, n: int = 20) -> pathlib.Path:
    """MILES-like (and two STELIB-like) stars made with the emulator, in the wheel's layout."""
    rng = np.random.default_rng(3)
    ids = np.arange(1, n + 1)
    lab = np.column_stack([rng.uniform(4300, 6800, n), rng.uniform(1.5, 4.6, n), rng.uniform(-2.0, 0.3, n)])
    emu = SpectralModel.load_default()
    air = 3540.5 + 0.9 * np.arange(4300)
    flux = emu.render(teff=lab[:, 0], logg=lab[:, 1], feh=lab[:, 2], alphafe=np.zeros(n), wave=air)
    db = "".join(f"{i:04d} {t:.0f} {g:.2f} {f:.2f}\n" for i, (t, g, f) in zip(ids, lab))
    names = "Name                  MILES\n" + "".join(f"HD{i:06d}              {i:04d}\n" for i in ids)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MILES_DIR + "MILES_params.db", "# id teff logg feh\n" + db)
        zf.writestr(MILES_DIR + "paramsMILES_v9.1.txt", names)
        for i in ids:
            zf.writestr(MILES_DIR + f"s_m{i:04d}V.fits", _fits_bytes(flux[i - 1], 3540.5, 0.9))
        sgrid = 3200.0 + np.arange(6700)
        for i in (1, 5):  # one training star and one held-out star in STELIB too
            f = emu.render(teff=lab[i - 1, 0], logg=lab[i - 1, 1], feh=lab[i - 1, 2], alphafe=0.0, wave=sgrid)[0]
            zf.writestr(STELIB_DIR + f"STELIB_v3.2_HD{i:06d}.fits", _fits_bytes(f, 3200.0, 1.0))
    return path


def test_recipe_writes_a_bundle_and_the_model_card_metrics(tmp_path):
    spec = importlib.util.spec_from_file_location("train_default_model", ROOT / "scripts" / "train_default_model.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    wheel = _wheel(tmp_path / "sdss_mangadap-4.5.0-py3-none-any.whl")
    out, metrics = tmp_path / "bundle", tmp_path / "metrics.json"
    rc = script.main(["--out", str(out), "--wheel", str(wheel), "--work", str(tmp_path / "work"),
                      "--copies-lamost", "2", "--copies-desi", "2", "--copies-ft-lamost", "1",
                      "--n-emu-lamost", "60", "--n-emu-desi", "40", "--ensemble", "1", "--epochs", "1",
                      "--ft-epochs", "1", "--methods", "zero-shot,lora", "--metrics-out", str(metrics)])
    assert rc == 0
    b = load_bundle(out)
    m = json.loads(metrics.read_text())
    assert m["weights_sha256"] == b.sha256 and b.manifest["weights"]["dtype"] == "float16"
    assert m["chosen"] in ("zero-shot", "lora") and set(m["results"]) == {"zero-shot", "lora"}
    assert set(m["error_floor"]) == set(b.label_names) == {"FEH", "ALPHAFE", "TEFF", "LOGG"}
    # 20 stars, ids 5, 10, 15, 20 held out: 16 MILES + 1 STELIB training stars, 4 held-out ones
    assert m["sizes"]["pretrain"]["real_stars"] == 16
    assert m["sizes"]["heldout_desi"]["real_stars"] == 4
    assert {x["subset"] for x in m["final"]["heldout_lamost"]} >= {"all", "[Fe/H] < -1", "logg < 3.5"}
    assert "divisible by 5" in m["heldout_rule"] and len(m["extra_libraries"]) == 1
    assert m["training_stars"] == {"MILES": 16, "STELIB": 1}
    prov = b.manifest["provenance"]["training_data"]
    assert prov["heldout"] == m["heldout_rule"] and "STELIB" in prov["extra"][0]
    # the recorded command names no file of this machine
    command = b.manifest["provenance"]["command"]
    assert str(tmp_path) not in command and "--out OUT" in command and "--ensemble 1" in command
    assert str(tmp_path) not in json.dumps(m)
