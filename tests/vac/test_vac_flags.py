"""Flag bits: composition from diagnostics, FLAG_BAD, header cards."""

from __future__ import annotations

import numpy as np
import pytest

from catalog_tool.vac import flags as fl

B = {f.name: f.value for f in fl.FLAG_BITS}
LABELS = ["FEH", "ALPHAFE", "TEFF", "LOGG"]


def test_bits_are_unique_and_cover_the_brief():
    bits = [f.bit for f in fl.FLAG_BITS]
    assert bits == list(range(len(bits)))
    for name in ("NOT_STAR", "LOW_SNR", "BAD_PIXELS", "NOT_COVERED", "CONT_FAIL", "PRED_OUT_OF_DOMAIN",
                 "ENSEMBLE_DISAGREE", "ZWARN", "BAD_FIBERSTATUS", "NOT_ESTIMATED", "NO_REDROCK",
                 "BAD_COORDS", "DUPLICATE_ID"):
        assert name in B
    # warnings, not bad: the values are there
    for name in ("LOW_SNR", "ZWARN", "NO_REDROCK", "BAD_COORDS"):
        assert not fl.BAD_MASK & B[name]
    for name in ("NOT_STAR", "CONT_FAIL", "PRED_OUT_OF_DOMAIN", "BAD_FIBERSTATUS", "DUPLICATE_ID", "FILE_MISSING"):
        assert fl.BAD_MASK & B[name]
    # retired bits keep their numbers (and READ_FAILED its place in BADMASK) but are never set
    assert {f.name for f in fl.FLAG_BITS if f.retired} == {"INPUT_OUT_OF_DOMAIN", "READ_FAILED"}


def _base(n):
    """Diagnostics of n clean, processed stars."""
    return dict(
        is_star=np.ones(n, bool), snr=np.full(n, 50.0),
        bad_frac=np.full(n, 0.01), covered=np.ones(n, bool), cont_ok=np.ones(n, bool),
        pred_in_domain=np.ones(n, bool),
        ensemble_std=np.tile([0.05, 0.02, 50.0, 0.1], (n, 1)), label_names=LABELS,
        zwarn=np.zeros(n, np.int64), fiberstatus=np.zeros(n, np.int32), redrock_found=np.ones(n, bool),
        coords_ok=np.ones(n, bool), unique_id=np.ones(n, bool),
    )


def test_each_diagnostic_sets_exactly_its_bit():
    n = 14
    d = _base(n)
    d["estimated"] = np.ones(n, bool)
    d["estimated"][10] = False
    d["is_star"][1] = False
    d["snr"][2] = 4.0
    d["bad_frac"][3] = 0.6
    d["covered"][4] = False
    d["cont_ok"][5] = False
    d["pred_in_domain"][6] = False
    d["ensemble_std"][7, 2] = 400.0     # TEFF spread 400 K > 250 K
    d["zwarn"][8] = 4
    d["fiberstatus"][9] = 8
    d["redrock_found"][11] = False
    d["coords_ok"][12] = False
    d["unique_id"][13] = False
    flags = fl.compute_flags(**d)
    assert flags.dtype == np.int64
    expected = [0, B["NOT_STAR"], B["LOW_SNR"], B["BAD_PIXELS"], B["NOT_COVERED"], B["CONT_FAIL"],
                B["PRED_OUT_OF_DOMAIN"], B["ENSEMBLE_DISAGREE"], B["ZWARN"], B["BAD_FIBERSTATUS"],
                B["NOT_ESTIMATED"], B["NO_REDROCK"], B["BAD_COORDS"], B["DUPLICATE_ID"]]
    np.testing.assert_array_equal(flags, expected)
    np.testing.assert_array_equal(
        fl.flag_bad(flags), [False, True, False, True, True, True, True, True, False, True, True, False,
                             False, True])


def test_quality_bits_only_on_processed_rows_row_bits_on_every_row():
    d = _base(3)
    d["snr"][:] = np.nan            # nothing usable anywhere
    d["bad_frac"][:] = 1.0
    d["zwarn"][:] = 4
    d["is_star"][1:] = False
    d["coords_ok"][2] = False
    d["unique_id"][2] = False
    d["redrock_found"][2] = False
    flags = fl.compute_flags(**d)
    np.testing.assert_array_equal(flags, [
        B["LOW_SNR"] | B["BAD_PIXELS"] | B["ZWARN"],   # NaN S/N counts as low
        B["NOT_STAR"] | B["ZWARN"],
        B["NOT_STAR"] | B["ZWARN"] | B["BAD_COORDS"] | B["DUPLICATE_ID"] | B["NO_REDROCK"],
    ])


def test_retired_bits_cannot_be_set():
    import inspect

    params = inspect.signature(fl.compute_flags).parameters
    assert "read_ok" not in params and "input_in_domain" not in params
    d = _base(5)
    d["is_star"][0] = False
    d["snr"][1] = np.nan
    d["covered"][2] = False
    d["coords_ok"][3] = False
    d["unique_id"][4] = False
    flags = fl.compute_flags(**d, estimated=np.zeros(5, bool))
    assert not np.any(flags & (B["READ_FAILED"] | B["INPUT_OUT_OF_DOMAIN"]))


def test_thresholds_and_per_label_ensemble_limits():
    d = _base(4)
    d["ensemble_std"] = np.array([[0.24, 0.09, 240.0, 0.39],    # all just inside
                                  [0.26, 0.0, 0.0, 0.0],        # FEH out
                                  [0.0, 0.0, 0.0, 0.41],        # LOGG out
                                  [np.nan, np.nan, np.nan, np.nan]])
    d["snr"] = np.array([10.0, 9.99, 50, 50])
    flags = fl.compute_flags(**d)
    np.testing.assert_array_equal(flags, [0, B["ENSEMBLE_DISAGREE"] | B["LOW_SNR"], B["ENSEMBLE_DISAGREE"], 0])
    strict = fl.FlagThresholds(min_snr=60.0, max_ensemble_std=(("FEH", 0.3),))
    flags = fl.compute_flags(**d, thresholds=strict)
    np.testing.assert_array_equal(flags, [B["LOW_SNR"]] * 4)  # LOGG no longer checked, FEH 0.26 < 0.3


def test_survey_bits_nulls_and_masks():
    flags = fl.compute_flags(is_star=np.ones(4, bool), zwarn=np.array([-1, 0, 4, 2**32]),
                             fiberstatus=np.array([-1, 2, 0, 0]))
    np.testing.assert_array_equal(flags, [0, B["BAD_FIBERSTATUS"], B["ZWARN"], B["ZWARN"]])
    only_bit2 = fl.FlagThresholds(zwarn_mask=4)
    flags = fl.compute_flags(is_star=np.ones(4, bool), zwarn=np.array([-1, 0, 4, 2**32]),
                             thresholds=only_bit2)
    np.testing.assert_array_equal(flags, [0, 0, B["ZWARN"], 0])


def test_missing_inputs_never_set_bits_and_shapes_are_checked():
    np.testing.assert_array_equal(fl.compute_flags(is_star=np.array([True, False])), [0, B["NOT_STAR"]])
    with pytest.raises(ValueError, match="3 rows, expected 2"):
        fl.compute_flags(is_star=np.ones(2, bool), snr=np.ones(3))
    with pytest.raises(ValueError, match="label_names"):
        fl.compute_flags(is_star=np.ones(2, bool), ensemble_std=np.zeros((2, 4)))


def test_in_domain():
    values = np.array([[0.0, 5000.0], [-5.0, 5000.0], [0.0, 9000.0], [np.nan, np.nan]])
    np.testing.assert_array_equal(fl.in_domain(values=values, lo=[-4, 3000], hi=[1, 8000]),
                                  [True, False, False, True])


def test_flag_names_and_cards():
    assert fl.flag_names(B["LOW_SNR"] | B["ZWARN"] | (1 << 40)) == ["LOW_SNR", "ZWARN", "BIT40"]
    cards = fl.header_cards()
    assert {c["name"]: c["value"] for c in cards}["FLAGB10"] == "READ_FAILED"
    assert {c["name"]: c["value"] for c in cards}["BADMASK"] == fl.BAD_MASK
    for c in cards:
        assert len(c["name"]) <= 8
        # KEY= 'VALUE' / comment must fit one 80-character card
        assert 10 + len(repr(c["value"])) + 3 + len(c["comment"]) <= 80, c


def test_thresholds_round_trip():
    t = fl.FlagThresholds(min_snr=7.5, max_ensemble_std=(("TEFF", 100.0),))
    assert fl.FlagThresholds.from_dict(t.to_dict()) == t


def test_the_default_thresholds_are_built_in_one_place():
    """A run's thresholds are chosen once (pipeline.partition.run_settings) and read back from the
    plan; every default is the one DEFAULT_THRESHOLDS object, never a second ``FlagThresholds()``."""
    import ast
    import inspect
    import pathlib

    import catalog_tool
    from catalog_tool.vac.write import Provenance

    calls = []
    for path in sorted(pathlib.Path(catalog_tool.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "FlagThresholds":
                calls.append(f"{path.name}:{node.lineno}")
    assert len(calls) == 1 and calls[0].startswith("flags.py:"), calls
    assert inspect.signature(fl.compute_flags).parameters["thresholds"].default is fl.DEFAULT_THRESHOLDS
    assert Provenance("m", "sha", "cmd", "in").thresholds is fl.DEFAULT_THRESHOLDS
    assert fl.DEFAULT_THRESHOLDS == fl.FlagThresholds.from_dict(fl.DEFAULT_THRESHOLDS.to_dict())


def test_a_catalogue_row_without_its_file():
    """FILE_MISSING instead of NOT_STAR and no quality bit; row bits (coordinates) still set."""
    n = 4
    found = np.array([True, False, False, True])
    flags = fl.compute_flags(is_star=np.array([True, False, True, False]), file_found=found,
                             snr=np.full(n, 1.0), coords_ok=np.array([True, True, False, True]))
    assert flags.tolist() == [B["LOW_SNR"], B["FILE_MISSING"], B["FILE_MISSING"] | B["BAD_COORDS"], B["NOT_STAR"]]
    assert fl.flag_bad(flags).tolist() == [False, True, True, True]
