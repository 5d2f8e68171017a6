"""Use the library directly: read one file into a SpectraBatch, preprocess it, predict labels.

No pipeline, no Dask, no VAC: the three calls every partition of ``stxcat annotate`` makes, for
working in a notebook or a script of your own::

    batch = read_coadd(path)                     # or read_lamost(path): a SpectraBatch
    pre = preprocess_batch(batch, grid=..., settings=...)   # the bundle's grid and settings
    pred = predict(bundle, flux=pre.flux, ivar=pre.ivar)

Usage::

    python examples/python_api.py [--model default] [FILE]

FILE is a DESI coadd or a LAMOST LRS file (recognised by its structure); without one, a DESI pixel
is simulated into a temporary folder.

Expected output (with the bundled ``default`` model; values depend on the file and the model)::

    read coadd-main-bright-10434.fits: 20 spectra (desi), arms B, R, Z
    preprocessed onto 1462 pixels (3999.4-5598.6 A): median S/N 18.4, 20 covered
    model default: FEH, ALPHAFE, TEFF, LOGG (ensemble of 5)
     row            TARGETID  SPECTYPE    SNR     FEH  +-     ALPHAFE  +-      TEFF  +-     LOGG  +-
       0   39627...          STAR       25.1   -0.52 0.08   0.12 0.03    5480   70   4.41 0.11
    ... (one line per spectrum; the rows that are not stars are estimated too here,
         the pipeline would flag them NOT_STAR)
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np


def read_any(path: str):
    """A SpectraBatch from any file a stxcat reader knows (DESI coadd, LAMOST file), told apart by
    structure (catalog_tool.io.readers: discovery asks each reader, read_groups reads with it)."""
    from catalog_tool.io import readers, release

    idx = release.discover([path])
    if not idx.entries:
        reason = idx.skipped[0][1] if idx.skipped else "not a DESI coadd or LAMOST file"
        raise SystemExit(f"{path}: {reason}")
    (reader, batches, failures), = readers.read_groups(idx.entries)
    if failures:
        raise SystemExit(f"{path}: {failures[0][1]}")
    return batches[0], reader.kind


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", default=None, help="DESI coadd or LAMOST LRS file")
    ap.add_argument("--model", default="default", help="bundled model name or bundle folder")
    args = ap.parse_args(argv)

    from catalog_tool.models.bundle import load_bundle
    from catalog_tool.models.infer import predict
    from catalog_tool.preprocess import ModelGrid, PreprocessSettings, preprocess_batch

    with tempfile.TemporaryDirectory() as tmp:
        path = args.file
        if path is None:
            from catalog_tool.sim.desi import simulate_desi

            sim = simulate_desi(os.path.join(tmp, "sim"), pixels=1, per_pixel=20, seed=5, resolution=False)
            path = os.path.join(sim.out, next(f for f in sim.files if os.path.basename(f).startswith("coadd-")))
        batch, kind = read_any(path)
        print(f"read {os.path.basename(path)}: {len(batch)} spectra ({kind}), arms {', '.join(batch.arms)}")

        bundle = load_bundle(args.model)
        grid = ModelGrid.from_dict(bundle.grid)
        settings = PreprocessSettings.from_dict(bundle.preprocess)
        pre = preprocess_batch(batch, grid=grid, settings=settings)
        snr = pre.diagnostics["SNR_MEDIAN"]
        print(f"preprocessed onto {grid.npix} pixels ({grid.wave[0]:.1f}-{grid.wave[-1]:.1f} A): "
              f"median S/N {np.nanmedian(snr):.1f}, {int(pre.diagnostics['COVERED'].sum())} covered")

        pred = predict(bundle, flux=pre.flux, ivar=pre.ivar, device="cpu")
        print(f"model {bundle.name}: {', '.join(pred.label_names)} (ensemble of {bundle.ensemble_size})")
        head = f"{'row':>4} {'TARGETID':>19} {'SPECTYPE':>9} {'SNR':>6}" + "".join(
            f" {n:>8} {'+-':>5}" for n in pred.label_names)
        print(head)
        spectype = batch.meta.get("SPECTYPE", np.full(len(batch), ""))
        for i in range(len(batch)):  # printing, not science: one line per spectrum
            vals = "".join(f" {v:8.2f} {e:5.2f}" for v, e in zip(pred.values[i], pred.errors[i]))
            print(f"{i:>4} {int(batch.meta['TARGETID'][i]):>19} {str(spectype[i]):>9} {snr[i]:6.1f}{vals}")


if __name__ == "__main__":
    main()
