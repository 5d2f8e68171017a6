"""The one sky matcher: one-to-one nearest-first pairs within the radius, and all pairs within it."""

from __future__ import annotations

import types

import numpy as np

from catalog_tool.train.data import _match_rows
from catalog_tool.train.skymatch import match_sky, pairs_within

ARCSEC = 1 / 3600.0


def _sep_arcsec(ra1, dec1, ra2, dec2):
    """Great-circle separations (haversine), an independent formula for the reference."""
    r1, d1, r2, d2 = map(np.radians, (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(h))) * 3600.0


def _greedy(ra_a, dec_a, ra_b, dec_b, radius):
    """Reference: every pair within the radius, taken nearest first unless a row is already used."""
    sep = _sep_arcsec(ra_a[:, None], dec_a[:, None], ra_b[None, :], dec_b[None, :])
    cand = sorted((s, i, j) for (i, j), s in np.ndenumerate(sep) if s <= radius)
    used_a, used_b, out = set(), set(), {}
    for _, i, j in cand:
        if i not in used_a and j not in used_b:
            used_a.add(i), used_b.add(j)
            out[i] = j
    return out


def test_one_to_one_nearest_first():
    ra_a = np.array([10.0, 10.0005, 200.0, 359.99995, np.nan])
    dec_a = np.array([5.0, 5.0, -30.0, 0.0, 1.0])
    ra_b = np.array([200.0 + 1e-4, 0.00005, 10.0001, 50.0, 10.0])
    dec_b = np.array([-30.0, 0.0, 5.0, 50.0, np.nan])
    ia, ib = match_sky(ra_a=ra_a, dec_a=dec_a, ra_b=ra_b, dec_b=dec_b, radius_arcsec=1.0)
    # a[1] is 1.4" from b[2] (beyond the radius); RA wraps at 0/360; NaN positions never match
    assert dict(zip(ia.tolist(), ib.tolist())) == {0: 2, 2: 0, 3: 1}
    assert list(ia) == sorted(ia)


def test_a_row_whose_nearest_went_to_a_closer_row_takes_its_next_neighbour():
    # a0: b0 at 0.3", b1 at 0.8"; a1: b0 at 0.2". Nearest first: (a1, b0), then (a0, b1).
    ra_a, dec_a = np.array([100.0, 100.0]), np.array([0.3 * ARCSEC, -0.2 * ARCSEC])
    ra_b, dec_b = np.array([100.0, 100.0]), np.array([0.0, 1.1 * ARCSEC])
    ia, ib = match_sky(ra_a=ra_a, dec_a=dec_a, ra_b=ra_b, dec_b=dec_b, radius_arcsec=1.0)
    assert dict(zip(ia.tolist(), ib.tolist())) == {0: 1, 1: 0}
    # two spectra near one star: only the nearer is labelled
    ia, ib = match_sky(ra_a=ra_a, dec_a=dec_a, ra_b=ra_b[:1], dec_b=dec_b[:1], radius_arcsec=1.0)
    assert dict(zip(ia.tolist(), ib.tolist())) == {1: 0}


def test_equals_the_greedy_reference_in_a_crowded_field():
    rng = np.random.default_rng(7)
    n, m = 300, 250
    ra_a = 150.0 + rng.uniform(0, 20 * ARCSEC, n)
    dec_a = rng.uniform(-10 * ARCSEC, 10 * ARCSEC, n)
    ra_b = 150.0 + rng.uniform(0, 20 * ARCSEC, m)
    dec_b = rng.uniform(-10 * ARCSEC, 10 * ARCSEC, m)
    ia, ib = match_sky(ra_a=ra_a, dec_a=dec_a, ra_b=ra_b, dec_b=dec_b, radius_arcsec=1.0)
    want = _greedy(ra_a, dec_a, ra_b, dec_b, 1.0)
    assert len(want) > 100 and len(set(ib)) == len(ib)
    assert dict(zip(ia.tolist(), ib.tolist())) == want
    # all pairs within the radius: the reference's candidate list, nothing more
    i, j = pairs_within(ra_a=ra_a, dec_a=dec_a, ra_b=ra_b, dec_b=dec_b, radius_arcsec=1.0)
    sep = _sep_arcsec(ra_a[:, None], dec_a[:, None], ra_b[None, :], dec_b[None, :])
    assert set(zip(i.tolist(), j.tolist())) == set(zip(*np.nonzero(sep <= 1.0)))


def test_empty_and_self_pairs():
    empty = np.zeros(0)
    assert [len(x) for x in match_sky(ra_a=empty, dec_a=empty, ra_b=np.ones(2), dec_b=np.ones(2),
                                       radius_arcsec=1.0)] == [0, 0]
    ra, dec = np.array([5.0, 5.0, 6.0]), np.array([1.0, 1.0 + 0.5 * ARCSEC, 1.0])
    i, j = pairs_within(ra_a=ra, dec_a=dec, ra_b=ra, dec_b=dec, radius_arcsec=1.0)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2)]


def test_label_table_by_position_labels_one_spectrum_per_star():
    """Spectra matched to a table without ids: one-to-one, nearest first (a TARGETID join instead
    gives every spectrum of the id its labels)."""
    meta = {"TARGET_RA": np.array([30.0, 30.0, 31.0]), "TARGETID": np.array([7, 7, 8]),
            "TARGET_DEC": np.array([2.0 + 0.6 * ARCSEC, 2.0 - 0.3 * ARCSEC, 2.0])}
    by_pos = types.SimpleNamespace(targetid=None, ra=np.array([31.0, 30.0]), dec=np.array([2.0, 2.0]))
    rows, trow = _match_rows(by_pos, meta)
    assert dict(zip(rows.tolist(), trow.tolist())) == {1: 1, 2: 0}
    by_id = types.SimpleNamespace(targetid=np.array([8, 7]), ra=None, dec=None)
    rows, trow = _match_rows(by_id, meta)
    assert dict(zip(rows.tolist(), trow.tolist())) == {0: 1, 1: 1, 2: 0}
