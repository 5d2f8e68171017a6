"""--where: a safe little expression language over label-table columns (no eval anywhere)."""

from __future__ import annotations

import numpy as np
import pytest

from catalog_tool.errors import ConfigError
from catalog_tool.train.where import WhereError, columns_of, parse, select

N = 6


@pytest.fixture
def table():
    # the dtypes of an APOGEE allStar: uint64 flags with high bits, int32/int16 flags, float32
    # values with a -9999 sentinel and a NaN, padded string ids
    return {
        "ASPCAPFLAG": np.array([0, 1 << 23, 1 << 40, (1 << 63) | 1, 0, 4], np.uint64),
        "EXTRATARG": np.array([0, 16, 0, 0, 16, 2], np.int16),
        "FE_H_FLAG": np.array([0, 0, 1, 0, 0, 0], np.int32),
        "SNR": np.array([80, 90, np.nan, 100, 40, 75], np.float32),
        "FE_H": np.array([-9999, 0.1, np.nan, -1.0, -0.5, -2.5], np.float32),
        "TEFF": np.array([4500, 5000, 5500, 6000, 6500, 7000], np.float64),
        "APOGEE_ID": np.array(["2M0001  ", "2M0002", "2M0003 ", "", "2M0005", "2M0006"]),
        "TELESCOPE": np.array([b"apo25m", b"lco25m", b"apo25m", b"apo1m ", b"apo25m", b"lco25m"]),
    }


def sel(text, table):
    return np.flatnonzero(select(text, table, N)).tolist()


@pytest.mark.parametrize("text,rows", [
    ("ASPCAPFLAG == 0 and SNR > 70", [0]),
    ("SNR > 70", [0, 1, 3, 5]),                                       # NaN S/N fails every comparison
    ("not SNR > 70", [2, 4]),                                         # ... and so passes its negation
    ("ASPCAPFLAG & 2**23 == 0", [0, 2, 3, 4, 5]),                     # & binds tighter than == (Python)
    ("(ASPCAPFLAG & 0x800000) != 0", [1]),
    ("ASPCAPFLAG & 2**63 != 0", [3]),                                 # the top bit of an unsigned flag
    ("ASPCAPFLAG & 1 == 1 or EXTRATARG & 16 == 16", [1, 3, 4]),
    ("EXTRATARG & (16 | 2) == 0", [0, 2, 3]),
    ("SNR > 70 or TEFF < 5000 and FE_H_FLAG == 1", [0, 1, 3, 5]),     # and before or
    ("(SNR > 70 or TEFF < 6000) and FE_H_FLAG == 1", [2]),            # parentheses change it
    ("not (SNR > 70 or TEFF > 6600)", [2, 4]),
    ("not not SNR > 95", [3]),
    ("4800 < TEFF <= 6000", [1, 2, 3]),                               # chained comparison
    ("FE_H > -9000", [1, 3, 4, 5]),                                   # unary minus; sentinel fails
    ("-1 <= FE_H < 0", [3, 4]),
    ("abs(FE_H) < 2", [1, 3, 4]),
    ("isfinite(SNR) and isnan(FE_H)", []),
    ("isnan(FE_H)", [2]),
    ("TEFF / 1000 - 1 >= 5 * (1 + 0)", [3, 4, 5]),
    ("APOGEE_ID == '2M0001'", [0]),                                   # trailing spaces do not count
    ('APOGEE_ID != "" and TELESCOPE == "apo25m"', [0, 2, 4]),         # bytes columns too
    ("TELESCOPE == 'apo1m'", [3]),
    ("snr > 70 AND fe_h_flag == 0 AND NOT teff > 5500", [0, 1]),      # names and keywords any case
    ("1 == 1", [0, 1, 2, 3, 4, 5]),
])
def test_cuts_select_the_right_rows(table, text, rows):
    assert sel(text, table) == rows


def test_columns_of_names_every_column_read():
    assert columns_of(parse("(SNR > 3 or abs(fe_h) < 1) and not ASPCAPFLAG & 8 == 0")) == {"SNR", "FE_H", "ASPCAPFLAG"}


@pytest.mark.parametrize("text,message", [
    ("SNRR > 70", "unknown column SNRR at position 1 (did you mean SNR?)"),
    ("SNR > 70 and ASPCAPFLAGS == 0", "unknown column ASPCAPFLAGS at position 14 (did you mean ASPCAPFLAG?)"),
    ("SNR = 70", "use == for equality"),
    ("SNR >", "expected a value"),
    ("(SNR > 70", "expected ')'"),
    ("SNR > 70)", "expected an operator"),
    ("SNR 70", "expected an operator"),
    ("", "empty expression"),
    ("SNR + 1", "gives values, not true/false"),
    ("SNR > 70 and 5", "'and' needs true/false values"),
    ("APOGEE_ID > 3", "cannot compare text with a number"),
    ("SNR & 1 == 0", "needs integer operands"),
    ("ASPCAPFLAG & -1 == 0", "unsigned flag column with a negative number"),
    ("2 ** 1000 > 1", "out of range"),
    ("10 ** 10 ** 10 > 1", "out of range"),
    ("1 / 0 > 1", "cannot compute"),
    ("'a' + 1 > 0", "cannot be applied to text"),
])
def test_bad_expressions_give_one_clear_line(table, text, message):
    with pytest.raises(WhereError) as err:
        select(text, table, N)
    line = str(err.value)
    assert message in line and "\n" not in line and line.startswith(f'--where "{text}"')
    assert isinstance(err.value, ConfigError)  # the CLI turns it into one line and exit status 1


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')",
    "open('/etc/passwd')",
    "eval('1')",
    "SNR.__class__",
    "[x for x in SNR]",
    "lambda: 0",
    "SNR > 70; import os",
    "exec",
    "`ls`",
    "SNR > 70 # comment",
    "getattr(SNR, 'x')",
    "(" * 200 + "1" + ")" * 200,
    "-" * 200 + "1 > 0",
    "x" * 3000,
])
def test_injection_attempts_are_refused_not_run(table, text, monkeypatch):
    import builtins

    def boom(*a, **k):  # pragma: no cover - must never be reached
        raise AssertionError("the expression reached Python's eval/exec/__import__")

    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    with pytest.raises(WhereError):
        select(text, table, N)


def test_array_columns_cannot_be_cut_on(table):
    table["FPARAM"] = np.zeros((N, 9), np.float32)
    with pytest.raises(WhereError, match="holds arrays"):
        select("FPARAM > 0", table, N)
