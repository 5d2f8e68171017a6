"""Quality cuts on label tables (``--where``), parsed safely: a tokenizer and a recursive-descent
parser over a small, Python-like grammar, evaluated column-wise with numpy. Nothing is ever
``eval``-ed or ``exec``-ed: names are table columns or one of three whitelisted functions, and
anything else is refused with one line naming the problem.

Grammar (lowest precedence first, as in Python)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := bitor (("==" | "!=" | "<" | "<=" | ">" | ">=") bitor)*     # chains: 4000 < TEFF < 7000
    bitor      := bitand ("|" bitand)*
    bitand     := sum ("&" sum)*                                           # ASPCAPFLAG & 2**23 == 0
    sum        := term (("+" | "-") term)*
    term       := factor (("*" | "/") factor)*
    factor     := ("-" | "+" | "~") factor | power
    power      := atom ("**" factor)?
    atom       := NUMBER | STRING | COLUMN | FUNCTION "(" expr ")" | "(" expr ")"

Numbers are decimal, with exponent, or hexadecimal (``0x800000``); strings are quoted with ``'``
or ``"`` and compare with text columns after trailing spaces are stripped on both sides (FITS pads
strings). Column names are case-insensitive. Functions: ``abs``, ``isfinite``, ``isnan``. The
keywords ``and``, ``or``, ``not`` may also be written in capitals. A comparison with NaN is false,
so a cut such as ``SNR > 70`` drops rows whose S/N is missing.
"""

from __future__ import annotations

import difflib
import operator
import re
from typing import Any

import numpy as np

from catalog_tool.errors import ConfigError

__all__ = ["WhereError", "parse", "columns_of", "check_columns", "evaluate", "select", "FUNCTIONS", "MAX_LENGTH"]

#: Longest expression accepted (characters) and deepest nesting of parentheses / unary operators.
MAX_LENGTH = 2000
_MAX_DEPTH = 60

FUNCTIONS = {"abs": np.abs, "isfinite": np.isfinite, "isnan": np.isnan}
_KEYWORDS = {"and", "or", "not"}
_COMPARE = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater,
            ">=": np.greater_equal}
_ARITH = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide, "**": np.power,
          "&": np.bitwise_and, "|": np.bitwise_or}

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\*\*|==|!=|<=|>=|[<>()&|~+\-*/,])
""", re.VERBOSE)


class WhereError(ConfigError):
    """A ``--where`` expression that cannot be parsed or evaluated on the table (one line)."""

    def __init__(self, text: str, problem: str):
        self.text, self.problem = text, problem
        super().__init__(f'--where "{text}": {problem}')


def _tokens(text: str) -> list[tuple[str, Any, int]]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            ch = text[pos]
            hint = " (use == for equality)" if ch == "=" else ""
            raise WhereError(text, f"unexpected character {ch!r} at position {pos + 1}{hint}")
        kind = m.lastgroup
        value = m.group()
        if kind == "number":
            value = int(value, 16) if value[:2].lower() == "0x" else (
                int(value) if re.fullmatch(r"\d+", value) else float(value))
        elif kind == "string":
            value = value[1:-1]
        elif kind == "name" and value.lower() in _KEYWORDS:
            kind, value = "op", value.lower()
        if kind != "space":
            out.append((kind, value, pos))
        pos = m.end()
    out.append(("end", None, len(text)))
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    # -- helpers --------------------------------------------------------------------------------
    def peek(self):
        return self.toks[self.i]

    def take(self):
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def accept(self, *ops):
        kind, value, _ = self.peek()
        if kind == "op" and value in ops:
            self.i += 1
            return value
        return None

    def fail(self, expected: str):
        kind, value, pos = self.peek()
        found = "the end of the expression" if kind == "end" else f"{value!r} at position {pos + 1}"
        raise WhereError(self.text, f"expected {expected}, found {found}")

    def nested(self):
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise WhereError(self.text, f"nested more than {_MAX_DEPTH} levels deep")

    # -- grammar --------------------------------------------------------------------------------
    def parse(self):
        node = self.expr()
        if self.peek()[0] != "end":
            self.fail("an operator (and, or, ==, <, &, ...)")
        return node

    def expr(self):
        items = [self.and_expr()]
        while self.accept("or"):
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else ("or", items)

    def and_expr(self):
        items = [self.not_expr()]
        while self.accept("and"):
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else ("and", items)

    def not_expr(self):
        if self.accept("not"):
            self.nested()
            node = ("not", self.not_expr())
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self):
        first = self.bitor()
        ops, operands = [], [first]
        while (op := self.accept(*_COMPARE)) is not None:
            ops.append(op)
            operands.append(self.bitor())
        return first if not ops else ("cmp", ops, operands)

    def _binary(self, ops, sub):
        node = sub()
        while (op := self.accept(*ops)) is not None:
            node = ("bin", op, node, sub())
        return node

    def bitor(self):
        return self._binary(("|",), self.bitand)

    def bitand(self):
        return self._binary(("&",), self.sum)

    def sum(self):
        return self._binary(("+", "-"), self.term)

    def term(self):
        return self._binary(("*", "/"), self.factor)

    def factor(self):
        op = self.accept("-", "+", "~")
        if op is not None:
            self.nested()
            node = ("unary", op, self.factor())
            self.depth -= 1
            return node
        return self.power()

    def power(self):
        base = self.atom()
        if self.accept("**"):
            return ("bin", "**", base, self.factor())
        return base

    def atom(self):
        kind, value, pos = self.peek()
        if kind == "number":
            self.take()
            return ("num", value)
        if kind == "string":
            self.take()
            return ("str", value)
        if kind == "name":
            self.take()
            if self.accept("("):
                if value.lower() not in FUNCTIONS:
                    raise WhereError(self.text, f"unknown function {value!r} at position {pos + 1} "
                                                f"(allowed: {', '.join(FUNCTIONS)})")
                self.nested()
                arg = self.expr()
                self.depth -= 1
                if not self.accept(")"):
                    self.fail("')' closing the function call")
                return ("call", value.lower(), arg)
            return ("col", value.upper(), pos)
        if self.accept("("):
            self.nested()
            node = self.expr()
            self.depth -= 1
            if not self.accept(")"):
                self.fail("')'")
            return node
        self.fail("a value (a number, a 'string', a column name or '(')")


def parse(text: str):
    """Parse a ``--where`` expression into a tree of tuples (raises :class:`WhereError`)."""
    if not isinstance(text, str) or not text.strip():
        raise WhereError(str(text), "empty expression")
    if len(text) > MAX_LENGTH:
        raise WhereError(text[:40] + "...", f"longer than {MAX_LENGTH} characters")
    return _Parser(text).parse()


def columns_of(node) -> set[str]:
    """Column names (upper case) an expression tree reads."""
    tag = node[0]
    if tag == "col":
        return {node[1]}
    if tag in ("and", "or"):
        return set().union(*(columns_of(n) for n in node[1]))
    if tag == "cmp":
        return set().union(*(columns_of(n) for n in node[2]))
    if tag == "bin":
        return columns_of(node[2]) | columns_of(node[3])
    if tag in ("unary", "call"):
        return columns_of(node[2])
    if tag == "not":
        return columns_of(node[1])
    return set()


def _column_nodes(node):
    if node[0] == "col":
        yield node
    for part in node[1:]:
        if isinstance(part, tuple):
            yield from _column_nodes(part)
        elif isinstance(part, list):
            for sub in part:
                yield from _column_nodes(sub)


def check_columns(node, available, *, text: str = "") -> None:
    """Raise :class:`WhereError` naming the first column of ``node`` not in ``available``."""
    available = list(available)
    for col in _column_nodes(node):
        if col[1] not in available:
            near = difflib.get_close_matches(col[1], available, n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise WhereError(text, f"unknown column {col[1]} at position {col[2] + 1}{hint}")


def _is_text(v) -> bool:
    return isinstance(v, str) or (isinstance(v, np.ndarray) and v.dtype.kind in "US")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_bool(v) -> bool:
    return isinstance(v, (bool, np.bool_)) or (isinstance(v, np.ndarray) and v.dtype == bool)


def _text(v):
    if isinstance(v, str):
        return v.rstrip()
    return np.char.rstrip(v.astype(str) if v.dtype.kind == "S" else v)


def _int_operands(a, b):
    """Integer operands for & and |: unsigned 64-bit flags (APOGEE) stay unsigned."""
    def kind(v):
        return v.dtype.kind if isinstance(v, np.ndarray) else ("b" if isinstance(v, bool) else
                                                                 "i" if isinstance(v, (int, np.integer)) else "f")
    if kind(a) not in "biu" or kind(b) not in "biu":
        return None
    if "u" in (kind(a), kind(b)):
        def unsigned(v):
            if isinstance(v, np.ndarray):
                if v.dtype.kind == "i" and v.size and int(v.min()) < 0:
                    raise OverflowError("a negative value")
                return v.astype(np.uint64)
            if int(v) < 0:
                raise OverflowError("a negative number")
            return np.uint64(int(v))
        return unsigned(a), unsigned(b)
    return a, b


class _Evaluator:
    def __init__(self, text: str, table: dict, n: int):
        self.text, self.table, self.n = text, table, n

    def fail(self, problem: str):
        raise WhereError(self.text, problem)

    def logical(self, v, what: str):
        if not _is_bool(v):
            self.fail(f"'{what}' needs true/false values on both sides (comparisons such as SNR > 70), "
                      f"got {'text' if _is_text(v) else 'a number'}")
        return np.broadcast_to(np.asarray(v, bool), (self.n,))

    def value(self, node):
        tag = node[0]
        if tag == "num":
            return node[1]
        if tag == "str":
            return node[1]
        if tag == "col":
            name = node[1]
            check_columns(node, self.table, text=self.text)
            col = np.asarray(self.table[name])
            if col.ndim != 1:
                self.fail(f"column {name} holds arrays of shape {col.shape[1:]} per row; only scalar columns "
                          "can be used in a cut")
            return col
        if tag == "and":
            out = self.logical(self.value(node[1][0]), "and").copy()
            for sub in node[1][1:]:
                out &= self.logical(self.value(sub), "and")
            return out
        if tag == "or":
            out = self.logical(self.value(node[1][0]), "or").copy()
            for sub in node[1][1:]:
                out |= self.logical(self.value(sub), "or")
            return out
        if tag == "not":
            return ~self.logical(self.value(node[1]), "not")
        if tag == "cmp":
            return self.compare(node[1], [self.value(n) for n in node[2]])
        if tag == "unary":
            v = self.value(node[2])
            if _is_text(v):
                self.fail(f"'{node[1]}' cannot be applied to text")
            if _is_number(v) and (node[1] != "~" or isinstance(v, int)):
                return {"-": operator.neg, "+": operator.pos, "~": operator.invert}[node[1]](v)
            return self.numeric(lambda x: {"-": np.negative, "+": np.positive, "~": np.invert}[node[1]](x),
                                node[1], v)
        if tag == "bin":
            a, b = self.value(node[2]), self.value(node[3])
            op = node[1]
            if _is_text(a) or _is_text(b):
                self.fail(f"'{op}' cannot be applied to text")
            if _is_number(a) and _is_number(b):  # constants (2**23): exact Python integers, bounded
                return self.constant(op, a, b)
            if op in "&|":
                try:
                    ints = _int_operands(a, b)
                except OverflowError as exc:
                    self.fail(f"'{op}' on an unsigned flag column with {exc}")
                if ints is None:
                    self.fail(f"'{op}' needs integer operands (bit flags), got a non-integer value")
                a, b = ints
            return self.numeric(lambda x, y: _ARITH[op](x, y), op, a, b)
        if tag == "call":
            v = self.value(node[2])
            if _is_text(v):
                self.fail(f"{node[1]}() cannot be applied to text")
            return self.numeric(FUNCTIONS[node[1]], f"{node[1]}()", v)
        raise AssertionError(tag)  # pragma: no cover - the parser makes no other nodes

    def constant(self, op, a, b):
        if op == "**" and (abs(b) > 64 or abs(a) > 2 ** 64):
            self.fail(f"constant {a}**{b} is out of range (exponents up to 64)")
        if op in "&|" and not (isinstance(a, int) and isinstance(b, int)):
            self.fail(f"'{op}' needs integer operands (bit flags), got a non-integer value")
        try:
            return {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
                    "**": operator.pow, "&": operator.and_, "|": operator.or_}[op](a, b)
        except (ZeroDivisionError, OverflowError) as exc:
            self.fail(f"cannot compute {a} {op} {b} ({exc})")

    def numeric(self, fn, what, *args):
        try:
            with np.errstate(all="ignore"):
                return fn(*[np.asarray(a, float) if _is_bool(a) and what not in "&|~" else a for a in args])
        except (TypeError, ValueError, OverflowError) as exc:
            self.fail(f"cannot apply '{what}' here ({exc})")

    def compare(self, ops, operands):
        out = np.ones(self.n, bool)
        for op, a, b in zip(ops, operands[:-1], operands[1:]):
            if _is_text(a) != _is_text(b):
                self.fail(f"cannot compare text with a number ('{op}')")
            if _is_text(a):
                a, b = _text(a), _text(b)
            try:
                with np.errstate(invalid="ignore"):
                    res = _COMPARE[op](a, b)
            except (TypeError, ValueError, OverflowError) as exc:  # e.g. < between strings and bytes
                self.fail(f"cannot compare with '{op}' ({exc})")
            out &= np.broadcast_to(np.asarray(res, bool), (self.n,))
        return out


def evaluate(node, table: dict, n: int, *, text: str = "") -> np.ndarray:
    """Boolean mask (n,) of the rows of ``table`` (column name -> array) that satisfy ``node``."""
    result = _Evaluator(text, table, n).value(node)
    if not _is_bool(result):
        raise WhereError(text, "the expression gives values, not true/false: compare them (e.g. SNR > 70)")
    return np.broadcast_to(np.asarray(result, bool), (n,)).copy()


def select(text: str, table: dict, n: int) -> np.ndarray:
    """Parse ``text`` and evaluate it on ``table``: the mask of the rows that pass the cut."""
    return evaluate(parse(text), table, n, text=text)
