"""HATS VAC written with hats-import: LSDB opens it; cone search and cross-match give the rows the
same operations give on the FITS VAC (computed here with astropy); metadata, provenance, errors,
atomicity and bad inputs."""

from __future__ import annotations

import io
import os

import lsdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from catalog_tool.vac import datamodel as dm
from catalog_tool.vac import hats as H
from catalog_tool.vac import parquet as P
from catalog_tool.vac import write as w
from vac_factory import assert_tables_equal, make_sky_columns, provenance

N = 3000
ERRORS = [("release/healpix/sv3/dark/99/9999/coadd-sv3-dark-9999.fits", "missing HDU FIBERMAP")]


@pytest.fixture(scope="module")
def fits_vac(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("hats") / "vac.fits"
    w.write_vac(path, make_sky_columns(N, np.random.default_rng(11)), provenance=provenance(), errors=ERRORS)
    return os.fspath(path)


@pytest.fixture(scope="module")
def hats_vac(fits_vac, tmp_path_factory) -> tuple[str, P.ExportResult]:
    out = tmp_path_factory.mktemp("hatsout") / "stxcat_vac"
    # small partitions, so that the clusters are split over several orders and pixels
    res = H.export_hats(fits_vac, out, pixel_threshold=400)
    return os.fspath(out), res


def _by_row(table: np.ndarray) -> np.ndarray:
    return table[np.argsort(table["SOURCE_ROW"])]


def _lsdb_rows(frame: pd.DataFrame) -> np.ndarray:
    import pyarrow as pa

    return P.arrow_to_table(pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False))


def test_lsdb_opens_it_with_every_row_once(fits_vac, hats_vac):
    out, res = hats_vac
    cat = lsdb.read_hats(out)
    assert res.nrows == N and res.nerrors == 1 and res.partitions == cat.npartitions > 4
    assert cat.hc_structure.catalog_info.total_rows == N
    assert list(cat.columns) == list(dm.names())
    # partitions of several HEALPix orders: hats-import's adaptive partitioning really ran
    assert len({p.order for p in cat.get_healpix_pixels()}) > 1
    got = _lsdb_rows(cat.compute())
    assert_tables_equal(_by_row(got), _by_row(w.read_vac(fits_vac)))


def test_cone_search_gives_the_rows_astropy_finds_in_the_fits_vac(fits_vac, hats_vac):
    fits = w.read_vac(fits_vac)
    coords = SkyCoord(fits["TARGET_RA"] * u.deg, fits["TARGET_DEC"] * u.deg)
    for ra, dec, radius in ((150.3, 2.2, 5400.0), (10.0, -29.0, 3600.0), (270.5, 65.5, 2700.0)):
        want = fits[coords.separation(SkyCoord(ra * u.deg, dec * u.deg)) <= radius * u.arcsec]
        got = _lsdb_rows(lsdb.read_hats(hats_vac[0]).cone_search(ra, dec, radius).compute())
        assert len(want) > 20
        assert_tables_equal(_by_row(got), _by_row(want))


def test_crossmatch_with_a_small_gaia_like_catalogue(fits_vac, hats_vac):
    fits = w.read_vac(fits_vac)
    rng = np.random.default_rng(5)
    # 400 VAC stars seen again 0-0.8 arcsec away, and 300 sources near no VAC row
    pick = rng.choice(N, 400, replace=False)
    offset = SkyCoord(fits["TARGET_RA"][pick] * u.deg, fits["TARGET_DEC"][pick] * u.deg).directional_offset_by(
        rng.uniform(0, 360, 400) * u.deg, rng.uniform(0, 0.8, 400) * u.arcsec)
    far = rng.uniform(0, 360, 300), np.degrees(np.arcsin(rng.uniform(-1, 1, 300)))
    gaia = pd.DataFrame({
        "source_id": np.arange(700, dtype=np.int64) + 4_000_000_000,
        "ra": np.r_[offset.ra.deg, far[0]], "dec": np.r_[offset.dec.deg, far[1]],
        "phot_g_mean_mag": rng.uniform(10, 20, 700)})
    gaia_cat = lsdb.from_dataframe(gaia, ra_column="ra", dec_column="dec", catalog_name="gaia",
                                  highest_order=3, moc_max_order=5)
    vac = lsdb.read_hats(hats_vac[0])
    xm = vac.crossmatch(gaia_cat, radius_arcsec=1.0, n_neighbors=1, suffixes=("", "_gaia")).compute()
    got = set(zip(xm["SOURCE_ROW"], xm["source_id_gaia"]))
    # the same on the FITS VAC: nearest Gaia source of every VAC row, kept within 1 arcsec
    vac_coords = SkyCoord(fits["TARGET_RA"] * u.deg, fits["TARGET_DEC"] * u.deg)
    idx, sep, _ = vac_coords.match_to_catalog_sky(SkyCoord(gaia["ra"].to_numpy() * u.deg,
                                                           gaia["dec"].to_numpy() * u.deg))
    keep = sep < 1.0 * u.arcsec
    want = set(zip(fits["SOURCE_ROW"][keep], gaia["source_id"].to_numpy()[idx[keep]]))
    assert len(want) >= 400  # duplicated targets match twice
    assert got == want
    np.testing.assert_allclose(np.sort(xm["_dist_arcsec"].to_numpy()), np.sort(sep[keep].arcsec), atol=1e-6)


def test_column_metadata_survives(hats_vac):
    import hats
    from astropy.io import votable

    out, _ = hats_vac
    schema = hats.read_hats(out).schema
    for c in dm.COLUMNS:
        meta = schema.field(c.name).metadata
        assert meta[b"unit"].decode() == c.unit and meta[b"ucd"].decode() == c.ucd, c.name
        assert meta[b"description"].decode() == c.description, c.name
    # every partition file carries them too (read back on its own)
    part = next(H._partition_files(out))
    assert pq.read_schema(part).field("TEFF").metadata[b"unit"] == b"K"
    # and the VOParquet table of _common_metadata (units, UCDs, descriptions for VO tools)
    meta = pq.read_schema(os.path.join(out, "dataset", "_common_metadata")).metadata
    fields = {f.name: f for f in votable.parse(io.BytesIO(meta[b"IVOA.VOTable-Parquet.content"])).iter_fields_and_params()}
    assert fields["TEFF"].ucd == "phys.temperature.effective" and str(fields["TEFF"].unit) == "K"
    assert fields["FEH"].description == dm.column("FEH").description


def test_provenance_and_errors(fits_vac, hats_vac):
    import hats

    out, _ = hats_vac
    info = hats.read_hats(out).catalog_info
    extra = info.extra_dict()
    prov = provenance()
    assert extra["stxcat_model"] == prov.model_name and extra["stxcat_model_sha256"] == prov.model_sha256
    assert extra["stxcat_command"] == prov.command and extra["stxcat_date"] == prov.date
    assert extra["stxcat_datamodel_version"] == dm.DATAMODEL_VERSION and extra["stxcat_errors"] == "1"
    assert "hats-import" in extra["hats_builder"]
    assert info.ra_column == "TARGET_RA" and info.dec_column == "TARGET_DEC"
    d = P.read_parquet_provenance(os.path.join(out, "dataset", "_common_metadata"))
    assert P.provenance_from_dict(d) == prov
    assert H.read_hats_errors(out) == w.read_errors(fits_vac) == ERRORS


def test_failed_export_leaves_no_partial_catalogue(fits_vac, tmp_path, monkeypatch):
    import hats.io.parquet_metadata

    def fail(*a, **k):  # after hats-import has written every partition
        raise OSError("disk full")

    monkeypatch.setattr(hats.io.parquet_metadata, "write_voparquet_in_common_metadata", fail)
    out = tmp_path / "cat"
    with pytest.raises(OSError, match="disk full"):
        H.export_hats(fits_vac, out)
    assert os.listdir(tmp_path) == []
    # an existing catalogue survives a failed overwrite untouched
    out.mkdir()
    (out / "hats.properties").write_text("old\n")
    with pytest.raises(OSError):
        H.export_hats(fits_vac, out, overwrite=True)
    assert os.listdir(tmp_path) == ["cat"] and (out / "hats.properties").read_text() == "old\n"


def test_hats_import_failure_is_one_line(fits_vac, tmp_path, monkeypatch):
    from hats_import.catalog.arguments import ImportArguments

    real = ImportArguments.__post_init__

    def wrong_ra(self):
        self.ra_column = "NO_SUCH_COLUMN"
        real(self)

    monkeypatch.setattr(ImportArguments, "__post_init__", wrong_ra)
    with pytest.raises(P.StxcatError) as exc:
        H.export_hats(fits_vac, tmp_path / "cat")
    assert str(exc.value).startswith("hats-import failed on ") and "\n" not in str(exc.value)
    assert os.listdir(tmp_path) == []


def test_existing_output_and_overwrite(fits_vac, hats_vac, tmp_path):
    out = tmp_path / "cat"
    out.mkdir()
    with pytest.raises(w.OutputExistsError, match="exists"):
        H.export_hats(fits_vac, out)
    res = H.export_hats(fits_vac, out, overwrite=True, pixel_threshold=400)
    assert lsdb.read_hats(res.path).hc_structure.catalog_info.total_rows == N
    assert os.listdir(tmp_path) == ["cat"]  # the old folder and the staging area are gone


def test_empty_vac_and_not_a_vac(tmp_path):
    vac = tmp_path / "empty.fits"
    w.write_vac(vac, dm.empty_table(0), provenance=provenance(), errors=[])
    with pytest.raises(P.StxcatError, match="no rows"):
        H.export_hats(vac, tmp_path / "cat")
    (tmp_path / "x.fits").write_text("not fits")
    with pytest.raises(P.NotAVacError):
        H.export_hats(tmp_path / "x.fits", tmp_path / "cat")
    assert sorted(os.listdir(tmp_path)) == ["empty.fits", "x.fits"]
