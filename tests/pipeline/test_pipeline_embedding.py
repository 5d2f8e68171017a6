"""annotate with an embedding-MLP bundle writes the same VAC as with a spectrum-MLP bundle (columns, dtypes, units)."""

from __future__ import annotations

import os

import fitsio
import numpy as np
import pytest

from pipeline_helpers import LABELS, read_table, run_annotate


@pytest.fixture(scope="module")
def embedding_bundle(tmp_path_factory) -> str:
    """A tiny embedding bundle (random 16-wide 1-layer encoder, 2 members) on the default grid."""
    import torch

    from catalog_tool.models.bundle import make_provenance
    from catalog_tool.models.encoder import EncoderConfig, SpectrumEncoder
    from catalog_tool.models.encoder_bundle import save_encoder
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.train.encoder import pretrain_embedding
    from catalog_tool.train.loop import TrainConfig
    from catalog_tool.train.synthetic import toy_labels, toy_spectra

    torch.set_num_threads(1)
    torch.manual_seed(4)
    grid, settings = ModelGrid(), PreprocessSettings()
    prov = make_provenance(command="tests/pipeline", seed=4)
    root = tmp_path_factory.mktemp("emb")
    enc = save_encoder(root / "enc", encoder=SpectrumEncoder(EncoderConfig(n_in=grid.npix, width=16, layers=1, heads=2)),
                       grid=grid, preprocess=settings, provenance=prov)
    rng = np.random.default_rng(4)
    labels = toy_labels(200, rng=rng)
    flux, _ = toy_spectra(labels=labels, rng=rng)
    trained = pretrain_embedding(flux=flux, labels={k: labels[k] for k in LABELS}, encoder=enc, hidden=(16, 8),
                                 heads="multi-label", ensemble=2, config=TrainConfig(epochs=2, device="cpu"))
    return os.fspath(trained.save(root / "tiny-emb", provenance=prov, name="tiny-emb").path)


def _columns(path):
    """(name, dtype, TUNIT, TUCD, TCOMM) of every column of the STELLAR_PARAMS table."""
    hdr = fitsio.read_header(path, ext="STELLAR_PARAMS")
    data = read_table(path)
    out = []
    for i, name in enumerate(data.dtype.names, start=1):
        out.append((name, data.dtype[name].str, hdr.get(f"TUNIT{i}"), hdr.get(f"TUCD{i}"), hdr.get(f"TCOMM{i}")))
    return out


def test_embedding_bundle_gives_the_same_vac_columns(tmp_path, desi_release, reference_vac, embedding_bundle):
    from catalog_tool.models.bundle import load_bundle

    out = tmp_path / "emb.fits"
    summary = run_annotate([desi_release.out], out, embedding_bundle, partition_size=30)
    assert summary.ok
    ref_cols, emb_cols = _columns(reference_vac), _columns(out)
    assert emb_cols == ref_cols  # names, order, dtypes, units, UCDs, descriptions
    assert any(c[0] == "FEH_ERR" for c in emb_cols) and any(c[2] == "K" for c in emb_cols if c[0] == "TEFF")
    ref, emb = read_table(reference_vac), read_table(out)
    np.testing.assert_array_equal(emb["TARGETID"], ref["TARGETID"])
    # the same stars are estimated (finite value and error) and the same rows flagged as non-stars
    for name in LABELS:
        np.testing.assert_array_equal(np.isfinite(emb[name]), np.isfinite(ref[name]), err_msg=name)
        est = np.isfinite(ref[name])
        assert est.sum() > 10 and np.all(emb[f"{name}_ERR"][est] > 0), name
        # a different model: its values are not the spectrum MLP's
        assert not np.allclose(emb[name][est], ref[name][est]), name
    np.testing.assert_array_equal(emb["FLAG_BAD"], ref["FLAG_BAD"])
    hdr = fitsio.read_header(out, ext="STELLAR_PARAMS")
    assert hdr["MODEL"] == "tiny-emb" and hdr["MODELSHA"] == load_bundle(embedding_bundle).sha256
