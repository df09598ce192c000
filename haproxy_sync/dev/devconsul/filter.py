"""?filter= : the go-bexpr expression language, evaluated the way Consul evaluates it.

Why it is this exact: the daemon hands its ``filter`` settings to Consul untouched. If devconsul took
expressions that Consul refuses, or matched other instances than Consul does, a setting that passes
every test here would fail (or route the wrong instances) against a real agent. So this follows the
library Consul pins, github.com/hashicorp/go-bexpr v0.1.2 (hashicorp/consul go.mod), one rule at a
time. Comments cite it as ``grammar.peg:N`` / ``validate.go:N`` / ``evaluate.go:N`` /
``field_config.go:N`` / ``coerce.go:N`` / ``filter.go:N`` (line numbers of v0.1.2):

* parsing is the PEG grammar of grammar.peg run with pigeon's semantics (ordered choice, no
  backtracking into a committed choice, its farthest-failure ``expected`` list, the errors its actions
  and ``&{}`` predicates record), so a bad expression gets the same message Consul puts in its answer;
* validation walks the selector through the Go type of the endpoint's items (``GoType``, a mirror of
  the agent/structs and api types Consul filters: which selectors exist, which operators each one
  takes, how the value is coerced) as validate.go does before any item is looked at;
* evaluation is evaluate.go's: a selector that runs through a list is true when one element matches,
  with the operator (negated ones too) applied to each element; a missing map key makes ``==``,
  ``is not empty`` and ``in`` false and every other operator true.

``compile_filter`` raises ``FilterError`` with bexpr's message; the caller prefixes it with
``Failed to create boolean expression evaluator: `` (filter.go:38) and Consul answers 500 with that
text (agent/http.go: a bexpr error is no HTTPError, so it falls to the default case). What is left
different from Consul is listed in ``KNOWN_DIFFERENCES``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

Predicate = Callable[[Any], bool]

KNOWN_DIFFERENCES: Final = (
    "regular expressions run on Python's re after a translation of RE2 syntax: \\p{...} classes and the "
    "(?U) flag, which RE2 has and re does not, are refused rather than evaluated",
    "a nil pointer in Go (Service.Weights, an agent service's Proxy or Connect) makes go-bexpr panic when a "
    "selector goes through it; here the missing object reads as its zero value",
    "about 60 nested parentheses are too deep for this parser (a RecursionError, answered as a filter error); "
    "go-bexpr's parser takes exponential time in the nesting (depth 10 took 11 s, depth 12 over 2 minutes), "
    "so no filter that works on Consul nests that deep",
    "/v1/agent/checks: Consul validates the selectors only when the first check is evaluated (its filter is "
    "created for a nil type), so a bad selector there is a 500 without the prefix, or no error at all with "
    "no checks; devconsul validates up front like every other endpoint",
)


class FilterError(ValueError):
    """A filter expression go-bexpr refuses; the message is the library's own."""


# --------------------------------------------------------------------------------------------------
# Go formatting and strconv, as the messages and value coercions need them


def _go_quote(text: str) -> str:
    """strconv.Quote (what ``%q`` prints): Go escapes, printable runes kept as they are."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (see _unquote)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char.isprintable():  # Python's printable set is Go's unicode.IsPrint: L, M, N, P, S and ' '
            out.append(char)
        elif char in _GO_NAMED_ESCAPES:
            out.append(_GO_NAMED_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_GO_NAMED_ESCAPES: Final = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
_UNQUOTE_SIMPLE: Final = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34}


class _SyntaxError(ValueError):
    """strconv.ErrSyntax."""


def _unquote(literal: str) -> str:
    """strconv.Unquote of a "..." or `...` literal (grammar.peg:152).

    Go strings are bytes: a \\x or octal escape that is no UTF-8 becomes a lone surrogate here, so it
    compares unequal to any real text, as the bytes do in Go.
    """
    body = literal[1:-1]
    if literal[0] == "`":
        return body.replace("\r", "")  # a raw string drops carriage returns
    if "\n" in body:
        raise _SyntaxError
    if "\\" not in body:
        return body
    out = bytearray()
    pos = 0
    while pos < len(body):
        char = body[pos]
        if char != "\\":
            out += char.encode("utf-8", "surrogateescape")
            pos += 1
            continue
        pos += 1
        if pos >= len(body):
            raise _SyntaxError
        kind = body[pos]
        pos += 1
        if kind in _UNQUOTE_SIMPLE:
            out.append(_UNQUOTE_SIMPLE[kind])
        elif kind in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[kind]
            digits = body[pos : pos + width]
            if len(digits) != width or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise _SyntaxError
            pos += width
            value = int(digits, 16)
            if kind == "x":
                out.append(value)
            elif value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                raise _SyntaxError
            else:
                out += chr(value).encode()
        elif kind in "01234567":
            digits = body[pos - 1 : pos + 2]
            if len(digits) != 3 or any(d not in "01234567" for d in digits) or int(digits, 8) > 255:
                raise _SyntaxError
            pos += 2
            out.append(int(digits, 8))
        else:  # \' in a "..." string, or any other letter
            raise _SyntaxError
    return out.decode("utf-8", "surrogateescape")


def _num_error(func: str, text: str, why: str) -> ValueError:
    return ValueError(f"strconv.{func}: parsing {_go_quote(text)}: {why}")


def _underscore_ok(text: str) -> bool:
    """strconv's underscoreOK: '_' only between digits (or after a base prefix)."""
    saw, pos = "^", 0
    if text[:1] in ("+", "-"):
        text = text[1:]
    hexadecimal = False
    if len(text) >= 2 and text[0] == "0" and text[1].lower() in "box":
        pos, saw, hexadecimal = 2, "0", text[1].lower() == "x"
    for char in text[pos:]:
        if char.isascii() and (char.isdigit() or (hexadecimal and char.lower() in "abcdef")):
            saw = "0"
        elif char == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def _parse_int(text: str) -> int:
    """strconv.ParseInt(text, 0, 0) on 64 bits: CoerceInt (coerce.go:11-14)."""
    digits, negative = text, False
    if digits[:1] in ("+", "-"):
        negative, digits = digits[0] == "-", digits[1:]
    if not digits:
        raise _num_error("ParseInt", text, "invalid syntax")
    base, rest = 10, digits
    if digits[0] == "0":
        prefix = digits[1:2].lower()
        if len(digits) >= 3 and prefix in ("b", "o", "x"):
            base, rest = {"b": 2, "o": 8, "x": 16}[prefix], digits[2:]
        else:
            base, rest = 8, digits[1:]
    value, underscores = 0, False
    for char in rest:  # ParseUint's loop: a digit that overflows stops it before a later bad one
        if char == "_":
            underscores = True
            continue
        digit = int(char, 36) if char.isascii() and char.isalnum() else 99
        if digit >= base:
            raise _num_error("ParseInt", text, "invalid syntax")
        value = value * base + digit
        if value >= 1 << 64:
            raise _num_error("ParseInt", text, "value out of range")
    if underscores and not _underscore_ok(digits):
        raise _num_error("ParseInt", text, "invalid syntax")
    if value >= 1 << 63 and not (negative and value == 1 << 63):
        raise _num_error("ParseInt", text, "value out of range")
    return -value if negative else value


def _parse_bool(text: str) -> bool:
    """strconv.ParseBool: CoerceBool (coerce.go:91-93)."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise _num_error("ParseBool", text, "invalid syntax")


# --------------------------------------------------------------------------------------------------
# The syntax tree (ast.go)

EQUAL, NOT_EQUAL, IN, NOT_IN = "Equal", "Not Equal", "In", "Not In"
IS_EMPTY, IS_NOT_EMPTY, MATCHES, NOT_MATCHES = "Is Empty", "Is Not Empty", "Matches", "Not Matches"


@dataclass(frozen=True)
class _Match:
    selector: tuple[str, ...]
    operator: str
    value: str | None  # the raw value; None for is (not) empty


@dataclass(frozen=True)
class _Not:
    operand: _Node


@dataclass(frozen=True)
class _Binary:
    operator: str  # "and" | "or"
    left: _Node
    right: _Node


_Node: TypeAlias = "_Match | _Not | _Binary"


# --------------------------------------------------------------------------------------------------
# A PEG parser with pigeon's semantics: grammar.go is pigeon's output for grammar.peg


class _Peg:
    """One parse: position, pigeon's farthest-failure bookkeeping and its recorded errors."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.invert = False
        self.max_fail = 0
        self.expected: list[str] = []
        self.errors: list[str] = []
        self.rules: list[str] = []
        self.memo: dict[tuple[str, int, bool], tuple[bool, Any, int]] = {}

    def fail_at(self, failed: bool, pos: int, want: str) -> None:
        """pigeon's failAt: remember what was wanted at the farthest position a match failed."""
        if failed != self.invert:
            return
        if pos < self.max_fail:
            return
        if pos > self.max_fail:
            self.max_fail, self.expected = pos, []
        self.expected.append("!" + want if self.invert else want)

    def position(self, pos: int) -> str:
        """pigeon's "line:col (byte offset)": a newline is column 0 of the line it starts."""
        through = self.text[: pos + 1]
        line, last = through.count("\n") + 1, through.rfind("\n")
        col = pos - last if last >= 0 else pos + 1
        return f"{line}:{col} ({len(self.text[:pos].encode('utf-8', 'surrogatepass'))})"

    def add_error(self, message: str, pos: int) -> None:
        """pigeon's addErrAt: the position, the innermost rule, the message; duplicates dropped."""
        prefix = self.position(pos) + (f": rule {self.rules[-1]}" if self.rules else "")
        entry = f"{prefix}: {message}"
        if entry not in self.errors:
            self.errors.append(entry)


class _Expr:
    def parse(self, peg: _Peg) -> tuple[bool, Any]:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError


@dataclass(frozen=True)
class _Lit(_Expr):
    literal: str

    def parse(self, peg: _Peg) -> tuple[bool, Any]:
        start = peg.pos
        if peg.text.startswith(self.literal, start):
            peg.pos += len(self.literal)
            peg.fail_at(True, start, _go_quote(self.literal))
            return True, self.literal
        peg.fail_at(False, start, _go_quote(self.literal))
        return False, None


@dataclass(frozen=True)
class _Class(_Expr):
    source: str  # as grammar.peg writes it: what pigeon reports as expected
    chars: str

    def parse(self, peg: _Peg) -> tuple[bool, Any]:
        start = peg.pos
        if start < len(peg.text) and peg.text[start] in self.chars:
            peg.pos += 1
            peg.fail_at(True, start, self.source)
            return True, peg.text[start]
        peg.fail_at(False, start, self.source)
        return False, None


class _AnyChar(_Expr):
    def parse(self, peg: _Peg) -> tuple[bool, Any]:
        start = peg.pos
        if start >= len(peg.text):
            peg.fail_at(False, start, ".")
            return False, None
        peg.pos += 1
        peg.fail_at(True, start, ".")
        return True, peg.text[start]


@dataclass(frozen=True)
class _Seq(_Expr):
    items: tuple[_Expr, ...]

    def parse(self, peg: _Peg) -> tuple[bool, Any]:
        start, values = peg.pos, []
        for item in self.items:
            ok, value = item.parse(peg)
            if not ok:
                peg.pos = start
                return False, None
            values.append(value)
        return True, values


@dataclass(frozen=True)
class _Choice(_Expr):
    options: tuple[_Expr, ...]

    def parse(self, peg: _Peg) -> tuple[bool, Any]:
        for option in self.options:
            ok, value = option.parse(peg)
            if ok:
                return True, value
        return False, None


@dataclass(frozen=True)
class _Repeat(_Expr):
    item: _Expr
    least: int  # 0 for `*`, 1 for `+`

    def parse(self, peg: _Peg) -> tuple[bool, Any]:
        values = []
        while True:
            ok, value = self.item.parse(peg)
            if not ok:
                return len(values) >= self.least, values
            values.append(value)


@dataclass(frozen=True)
class _Optional(_Expr):
    item: _Expr

    def parse(self, peg: _Peg) -> tuple[bool, Any]:
        return True, self.item.parse(peg)[1]


@dataclass(frozen=True)
class _Look(_Expr):
    """``&e`` (negate=False) or ``!e``: match without consuming; ``!`` inverts what failAt records."""

    item: _Expr
    negate: bool

    def parse(self, peg: _Peg) -> tuple[bool, Any]:
        start = peg.pos
        if self.negate:
            peg.invert = not peg.invert
        ok, _ = self.item.parse(peg)
        if self.negate:
            peg.invert = not peg.invert
        peg.pos = start
        return ok != self.negate, None


@dataclass(frozen=True)
class _Refuse(_Expr):
    """``&{ return false, errors.New(message) }``: records the error here, under the current rule."""

    message: str

    def parse(self, peg: _Peg) -> tuple[bool, Any]:
        peg.add_error(self.message, peg.pos)
        return False, None


@dataclass(frozen=True)
class _Action(_Expr):
    """``e { code }``: code sees the values and the matched text; an error it returns is recorded (at
    the start of the match) but does not fail the match, as in pigeon's parseActionExpr."""

    item: _Expr
    run: Callable[[Any, str], tuple[Any, str | None]]

    def parse(self, peg: _Peg) -> tuple[bool, Any]:
        start = peg.pos
        ok, value = self.item.parse(peg)
        if not ok:
            return False, None
        result, error = self.run(value, peg.text[start : peg.pos])
        if error is not None:
            peg.add_error(error, start)
        return True, result


@dataclass(frozen=True)
class _Rule(_Expr):
    """A reference to a rule. Memoised: pigeon re-parses instead, which only repeats failAt calls and
    errors it has already recorded (both deduplicated), so the results are the same, in linear time."""

    name: str

    def parse(self, peg: _Peg) -> tuple[bool, Any]:
        key = (self.name, peg.pos, peg.invert)
        if key in peg.memo:
            ok, value, end = peg.memo[key]
            peg.pos = end
            return ok, value
        peg.rules.append(_DISPLAY_NAMES.get(self.name, self.name))
        ok, value = _GRAMMAR[self.name].parse(peg)
        peg.rules.pop()
        peg.memo[key] = (ok, value, peg.pos)
        return ok, value


def _const(value: Any) -> Callable[[Any, str], tuple[Any, None]]:
    return lambda _values, _text: (value, None)


def _pick(index: int) -> Callable[[Any, str], tuple[Any, None]]:
    return lambda values, _text: (values[index], None)


def _same(values: Any, _text: str) -> tuple[Any, None]:
    return values, None


def _matched_text(_values: Any, text: str) -> tuple[str, None]:
    return text, None


def _not_expression(values: Any, _text: str) -> tuple[_Node, None]:
    operand = values[2]
    if isinstance(operand, _Not):  # grammar.peg:37-41: not not X is X
        return operand.operand, None
    return _Not(operand), None


def _string_literal(_values: Any, text: str) -> tuple[str, str | None]:
    try:
        return _unquote(text), None
    except _SyntaxError:
        return "", "invalid syntax"  # strconv.ErrSyntax, recorded; the value is Unquote's ""


def _binary(operator: str) -> Callable[[Any, str], tuple[_Binary, None]]:
    return lambda values, _text: (_Binary(operator, values[0], values[4]), None)


def _opt(item: _Expr) -> _Optional:
    return _Optional(item)


_WS, _EOF = _Rule("_"), _Rule("EOF")
_LETTERS: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_OPERATOR_WORDS: Final = {
    "MatchIsEmpty": (IS_EMPTY, ("is", "empty")),
    "MatchIsNotEmpty": (IS_NOT_EMPTY, ("is", "not", "empty")),
    "MatchIn": (IN, ("in",)),
    "MatchNotIn": (NOT_IN, ("not", "in")),
    "MatchContains": (IN, ("contains",)),  # grammar.peg:93-95: contains is In
    "MatchNotContains": (NOT_IN, ("not", "contains")),
    "MatchMatches": (MATCHES, ("matches",)),
    "MatchNotMatches": (NOT_MATCHES, ("not", "matches")),
}


def _words(words: tuple[str, ...], trailing_space: bool) -> _Seq:
    """``_ "w1" _ "w2" ... [_]``: every word of an operator is set off by whitespace."""
    items: list[_Expr] = []
    for word in words:
        items += [_WS, _Lit(word)]
    if trailing_space:
        items.append(_WS)
    return _Seq(tuple(items))


_GRAMMAR: Final[dict[str, _Expr]] = {
    # grammar.peg:10-14
    "Input": _Choice((
        _Action(_Seq((_opt(_WS), _Lit("("), _opt(_WS), _Rule("OrExpression"), _opt(_WS), _Lit(")"), _opt(_WS), _EOF)),
                _pick(3)),
        _Action(_Seq((_opt(_WS), _Rule("OrExpression"), _opt(_WS), _EOF)), _pick(1)),
    )),
    # grammar.peg:16-24: or is right-associative and binds looser than and
    "OrExpression": _Choice((
        _Action(_Seq((_Rule("AndExpression"), _WS, _Lit("or"), _WS, _Rule("OrExpression"))), _binary("or")),
        _Action(_Rule("AndExpression"), _same),
    )),
    # grammar.peg:26-34
    "AndExpression": _Choice((
        _Action(_Seq((_Rule("NotExpression"), _WS, _Lit("and"), _WS, _Rule("AndExpression"))), _binary("and")),
        _Action(_Rule("NotExpression"), _same),
    )),
    # grammar.peg:36-49
    "NotExpression": _Choice((
        _Action(_Seq((_Lit("not"), _WS, _Rule("NotExpression"))), _not_expression),
        _Action(_Rule("ParenthesizedExpression"), _same),
    )),
    # grammar.peg:51-57
    "ParenthesizedExpression": _Choice((
        _Action(_Seq((_Lit("("), _opt(_WS), _Rule("OrExpression"), _opt(_WS), _Lit(")"))), _pick(2)),
        _Action(_Rule("MatchExpression"), _same),
        _Seq((_Lit("("), _opt(_WS), _Rule("OrExpression"), _opt(_WS), _Look(_Lit(")"), True),
              _Refuse("Unmatched parentheses"))),
    )),
    # grammar.peg:59
    "MatchExpression": _Choice(tuple(_Rule(name) for name in (
        "MatchSelectorOpValue", "MatchSelectorOp", "MatchValueOpSelector"))),
    # grammar.peg:61-63
    "MatchSelectorOpValue": _Action(
        _Seq((_Rule("Selector"), _Choice(tuple(_Rule(name) for name in (
            "MatchEqual", "MatchNotEqual", "MatchContains", "MatchNotContains", "MatchMatches", "MatchNotMatches"))),
            _Rule("Value"))),
        lambda values, _text: (_Match(values[0], values[1], values[2]), None),
    ),
    # grammar.peg:65-67
    "MatchSelectorOp": _Action(
        _Seq((_Rule("Selector"), _Choice((_Rule("MatchIsEmpty"), _Rule("MatchIsNotEmpty"))))),
        lambda values, _text: (_Match(values[0], values[1], None), None),
    ),
    # grammar.peg:69-73: the value comes first for in / not in
    "MatchValueOpSelector": _Choice((
        _Action(_Seq((_Rule("Value"), _Choice((_Rule("MatchIn"), _Rule("MatchNotIn"))), _Rule("Selector"))),
                lambda values, _text: (_Match(values[2], values[1], values[0]), None)),
        _Seq((_Rule("Value"), _Choice((_Rule("MatchIn"), _Rule("MatchNotIn"))), _Look(_Rule("Selector"), True),
              _Refuse("Invalid selector"))),
    )),
    # grammar.peg:75-80: == and != need no whitespace around them
    "MatchEqual": _Action(_Seq((_opt(_WS), _Lit("=="), _opt(_WS))), _const(EQUAL)),
    "MatchNotEqual": _Action(_Seq((_opt(_WS), _Lit("!="), _opt(_WS))), _const(NOT_EQUAL)),
    # grammar.peg:81-104
    **{name: _Action(_words(words, trailing_space=name not in ("MatchIsEmpty", "MatchIsNotEmpty")), _const(op))
       for name, (op, words) in _OPERATOR_WORDS.items()},
    # grammar.peg:106-117
    "Selector": _Action(
        _Seq((_Rule("Identifier"), _Repeat(_Rule("SelectorOrIndex"), 0))),
        lambda values, _text: ((values[0], *values[1]), None),
    ),
    # grammar.peg:119-121: so a dash, a dot or a leading digit ends a dotted segment
    "Identifier": _Action(
        _Seq((_Class("[a-zA-Z]", _LETTERS), _Repeat(_Class("[a-zA-Z0-9_]", _LETTERS + "0123456789_"), 0))),
        _matched_text,
    ),
    # grammar.peg:123-127
    "SelectorOrIndex": _Choice((
        _Action(_Seq((_Lit("."), _Rule("Identifier"))), _pick(1)),
        _Action(_Rule("IndexExpression"), _same),
    )),
    # grammar.peg:129-135: ["any key"] is how a key with a dash is selected
    "IndexExpression": _Choice((
        _Action(_Seq((_Lit("["), _opt(_WS), _Rule("StringLiteral"), _opt(_WS), _Lit("]"))), _pick(2)),
        _Seq((_Lit("["), _opt(_WS), _Look(_Rule("StringLiteral"), True), _Refuse("Invalid index"))),
        _Seq((_Lit("["), _opt(_WS), _Rule("StringLiteral"), _opt(_WS), _Look(_Lit("]"), True),
              _Refuse("Unclosed index expression"))),
    )),
    # grammar.peg:137-139: an unquoted value is a selector (its segments joined with dots) or a number
    "Value": _Choice((
        _Action(_Rule("Selector"), lambda values, _text: (".".join(values), None)),
        _Action(_Rule("NumberLiteral"), _same),
        _Action(_Rule("StringLiteral"), _same),
    )),
    # grammar.peg:141-149
    "NumberLiteral": _Choice((
        _Action(_Seq((_opt(_Lit("-")), _Rule("IntegerOrFloat"), _Look(_Rule("AfterNumbers"), False))), _matched_text),
        _Seq((_opt(_Lit("-")), _Rule("IntegerOrFloat"), _Look(_Rule("AfterNumbers"), True),
              _Refuse("Invalid number literal"))),
    )),
    "AfterNumbers": _Look(_Choice((_WS, _EOF, _Lit(")"))), False),
    "IntegerOrFloat": _Seq((
        _Choice((_Lit("0"), _Seq((_Class("[1-9]", "123456789"), _Repeat(_Class("[0-9]", "0123456789"), 0))))),
        _opt(_Seq((_Lit("."), _Repeat(_Class("[0-9]", "0123456789"), 1)))),
    )),
    # grammar.peg:151-158: no escape ends a string early, so "a\"b" is `"a\"` and an Unquote error
    "StringLiteral": _Choice((
        _Action(_Choice((
            _Seq((_Lit("`"), _Repeat(_Rule("RawStringChar"), 0), _Lit("`"))),
            _Seq((_Lit('"'), _Repeat(_Rule("DoubleStringChar"), 0), _Lit('"'))),
        )), _string_literal),
        _Seq((_Choice((_Seq((_Lit("`"), _Repeat(_Rule("RawStringChar"), 0))),
                       _Seq((_Lit('"'), _Repeat(_Rule("DoubleStringChar"), 0))))),
              _EOF, _Refuse("Unterminated string literal"))),
    )),
    "RawStringChar": _Seq((_Look(_Lit("`"), True), _AnyChar())),
    "DoubleStringChar": _Seq((_Look(_Lit('"'), True), _AnyChar())),
    # grammar.peg:160: only these four characters are whitespace
    "_": _Repeat(_Class("[ \\t\\r\\n]", " \t\r\n"), 1),
    "EOF": _Look(_AnyChar(), True),
}
_DISPLAY_NAMES: Final = {
    "ParenthesizedExpression": '"grouping"', "MatchExpression": '"match"', "MatchSelectorOpValue": '"match"',
    "MatchSelectorOp": '"match"', "MatchValueOpSelector": '"match"', "Selector": '"selector"',
    "IndexExpression": '"index"', "Value": '"value"', "NumberLiteral": '"number"', "StringLiteral": '"string"',
    "_": '"whitespace"',
}


def _parse(text: str) -> _Node:
    """Parse as bexpr's Parse does; raise with pigeon's message(s), one per line."""
    peg = _Peg(text)
    try:
        ok, tree = _Rule("Input").parse(peg)
    except RecursionError:
        raise FilterError("devconsul: the expression nests too deeply to parse") from None
    if not ok and not peg.errors:
        wanted = set(peg.expected)
        at_end = "!." in wanted  # pigeon lists `!.` last, as EOF
        names = sorted(wanted - {"!."}) + (["EOF"] if at_end else [])
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}" if names else ""
        peg.add_error(f"no match found, expected: {listed}", peg.max_fail)
    if peg.errors:
        raise FilterError("\n".join(peg.errors))
    return tree


# --------------------------------------------------------------------------------------------------
# Go types and their field configurations (field_config.go)


@dataclass(frozen=True)
class GoType:
    """The shape of a Go type as go-bexpr sees it through reflection.

    kind is "string", "int", "bool", "slice", "map" (string keys), or "struct" (fields: the selectable
    ones, i.e. exported and not tagged ``bexpr:"-"``). Pointers are followed, so they are not kinds.
    """

    kind: str
    elem: GoType | None = None
    fields: Mapping[str, GoType] = field(default_factory=dict)


_STRING, _INT, _BOOL = GoType("string"), GoType("int"), GoType("bool")
_PRIMITIVES: Final = {"string", "int", "bool"}
_TIME = GoType("struct")  # time.Time: a struct whose fields are all unexported, so nothing is selectable


def _struct(**fields: GoType) -> GoType:
    return GoType("struct", fields=fields)


def _slice(elem: GoType) -> GoType:
    return GoType("slice", elem=elem)


def _map(elem: GoType) -> GoType:
    return GoType("map", elem=elem)


_ANY: Final = ""  # FieldNameAny (field_config.go:16): a map's keys


@dataclass(frozen=True)
class _FieldConfig:
    operators: frozenset[str]
    coerce: Callable[[str], Any] | None
    subfields: Mapping[str, _FieldConfig]
    type: GoType


_STRING_OPS: Final = frozenset({EQUAL, NOT_EQUAL, IN, NOT_IN, MATCHES, NOT_MATCHES})
_COERCE: Final[dict[str, Callable[[str], Any]]] = {"string": str, "int": _parse_int, "bool": _parse_bool}


def _field_config(go_type: GoType) -> _FieldConfig:
    """generateFieldConfigurationInternal (field_config.go:78-121)."""
    kind = go_type.kind
    if kind in _PRIMITIVES:  # field_config.go:89-100: strings also take in, not in, matches
        ops = _STRING_OPS if kind == "string" else frozenset({EQUAL, NOT_EQUAL})
        return _FieldConfig(ops, _COERCE[kind], {}, go_type)
    if kind == "slice":
        assert go_type.elem is not None
        if go_type.elem.kind in _PRIMITIVES:  # field_config.go:124-130: no == on a list of strings
            ops = frozenset({IN, NOT_IN, IS_EMPTY, IS_NOT_EMPTY})
            return _FieldConfig(ops, _COERCE[go_type.elem.kind], {}, go_type)
        inner = _field_config(go_type.elem)  # field_config.go:132-145: the element's fields, flattened
        return _FieldConfig(frozenset({IS_EMPTY, IS_NOT_EMPTY}), None, inner.subfields, go_type)
    if kind == "map":  # field_config.go:148-167: in / not in test the keys
        assert go_type.elem is not None
        return _FieldConfig(frozenset({IS_EMPTY, IS_NOT_EMPTY, IN, NOT_IN}), str,
                            {_ANY: _field_config(go_type.elem)}, go_type)
    return _FieldConfig(frozenset(), None, {name: _field_config(t) for name, t in go_type.fields.items()}, go_type)


# The types Consul filters, mirrored from hashicorp/consul agent/structs (structs.go, its
# structs_filtering_test.go) and api v1.34.5 (agent.go), from the releases that pin go-bexpr v0.1.2.
# Fields tagged `bexpr:"-"` (RaftIndex's CreateIndex/ModifyIndex, EnterpriseMeta, HealthCheck.Definition,
# Proxy.Config, an agent service's Datacenter, ...) are left out as go-bexpr leaves them out
# (field_config.go:188-199). The selectors and operators these give were compared with what
# bexpr.GenerateFieldConfigurations gives for the Go types: the same.
_WEIGHTS: Final = _struct(Passing=_INT, Warning=_INT)
_MESH_GATEWAY: Final = _struct(Mode=_STRING)
_PROXY: Final = _struct(
    EnvoyExtensions=_slice(_struct(Name=_STRING, Required=_BOOL, ConsulVersion=_STRING, EnvoyVersion=_STRING)),
    DestinationServiceName=_STRING, DestinationServiceID=_STRING, LocalServiceAddress=_STRING,
    LocalServicePort=_INT, LocalServiceSocketPath=_STRING, Mode=_STRING,
    TransparentProxy=_struct(OutboundListenerPort=_INT, DialedDirectly=_BOOL),
    Upstreams=_slice(_struct(
        DestinationType=_STRING, DestinationPartition=_STRING, DestinationNamespace=_STRING,
        DestinationPeer=_STRING, DestinationName=_STRING, DestinationPort=_STRING, Datacenter=_STRING,
        LocalBindAddress=_STRING, LocalBindPort=_INT, LocalBindSocketPath=_STRING, LocalBindSocketMode=_STRING,
        MeshGateway=_MESH_GATEWAY,
    )),
    MeshGateway=_MESH_GATEWAY,
    Expose=_struct(Checks=_BOOL, Paths=_slice(_struct(
        ListenerPort=_INT, Path=_STRING, LocalPathPort=_INT, Protocol=_STRING, ParsedFromCheck=_BOOL))),
    AccessLogs=_struct(Enabled=_BOOL, DisableListenerLogs=_BOOL, Type=_STRING, Path=_STRING,
                       JSONFormat=_STRING, TextFormat=_STRING),
)
_SERVICE_ADDRESS: Final = _struct(Address=_STRING, Port=_INT)
NODE: Final = _struct(
    ID=_STRING, Node=_STRING, Partition=_STRING, PeerName=_STRING, Address=_STRING, Datacenter=_STRING,
    TaggedAddresses=_map(_STRING), Meta=_map(_STRING),
)
_NODE_SERVICE: Final = _struct(
    Kind=_STRING, ID=_STRING, Service=_STRING, Tags=_slice(_STRING), Address=_STRING,
    TaggedAddresses=_map(_SERVICE_ADDRESS), Meta=_map(_STRING), Port=_INT, SocketPath=_STRING,
    Weights=_WEIGHTS, EnableTagOverride=_BOOL, Proxy=_PROXY, Connect=_struct(Native=_BOOL), PeerName=_STRING,
)
HEALTH_CHECK: Final = _struct(
    Node=_STRING, CheckID=_STRING, Name=_STRING, Status=_STRING, Notes=_STRING, Output=_STRING,
    ServiceID=_STRING, ServiceName=_STRING, ServiceTags=_slice(_STRING), Type=_STRING, Interval=_STRING,
    Timeout=_STRING, ExposedPort=_INT, PeerName=_STRING, LastCheckStartTime=_TIME,
)
#: /v1/health/service/:name (structs.CheckServiceNode)
CHECK_SERVICE_NODE: Final = _struct(Node=NODE, Service=_NODE_SERVICE, Checks=_slice(HEALTH_CHECK))
#: /v1/catalog/service/:name and /v1/catalog/services (structs.ServiceNode)
SERVICE_NODE: Final = _struct(
    ID=_STRING, Node=_STRING, Address=_STRING, Datacenter=_STRING, TaggedAddresses=_map(_STRING),
    NodeMeta=_map(_STRING), ServiceKind=_STRING, ServiceID=_STRING, ServiceName=_STRING,
    ServiceTags=_slice(_STRING), ServiceAddress=_STRING, ServiceTaggedAddresses=_map(_SERVICE_ADDRESS),
    ServiceWeights=_WEIGHTS, ServiceMeta=_map(_STRING), ServicePort=_INT, ServiceSocketPath=_STRING,
    ServiceEnableTagOverride=_BOOL, ServiceProxy=_PROXY, ServiceConnect=_struct(Native=_BOOL), PeerName=_STRING,
)
#: /v1/agent/services (api.AgentService: the same selectors as NodeService)
AGENT_SERVICE: Final = _NODE_SERVICE
_CONSUL_TYPES: Final = (CHECK_SERVICE_NODE, HEALTH_CHECK, SERVICE_NODE, NODE, AGENT_SERVICE)


def _type_for_fields(names: frozenset[str]) -> GoType | None:
    """The Consul type whose top-level fields the given JSON keys most resemble (devconsul's views carry
    a few keys the Go types hide, such as CreateIndex, so the match is by overlap, not equality)."""
    if not names:
        return None
    best, score = None, 0.0
    for go_type in _CONSUL_TYPES:
        mine = set(go_type.fields)
        overlap = len(mine & names) / len(mine | names)
        if overlap > score:
            best, score = go_type, overlap
    if score < 0.5:
        raise ValueError(f"no Consul filter type has fields like {sorted(names)}")
    return best


# --------------------------------------------------------------------------------------------------
# Validation (validate.go)


def _validate(node: _Node, fields: Mapping[str, _FieldConfig]) -> _Node:
    """validateRecurse (validate.go:8-129), left to right; returns the tree with values coerced."""
    if isinstance(node, _Not):
        return _Not(_validate(node.operand, fields))
    if isinstance(node, _Binary):
        return _Binary(node.operator, _validate(node.left, fields), _validate(node.right, fields))
    configs, last = fields, None
    for index, name in enumerate(node.selector):  # validate.go:60-75
        if name in configs:
            last = configs[name]
        elif _ANY in configs:
            last = configs[_ANY]
        else:
            raise FilterError(f"Selector {_go_quote('.'.join(node.selector[: index + 1]))} is not valid")
        configs = last.subfields
    assert last is not None
    selector = _go_quote(".".join(node.selector))
    if node.operator not in last.operators:  # validate.go:77-88
        raise FilterError(f"Invalid match operator {_go_quote(node.operator)} for selector {selector}")
    if node.value is None:
        return _Compiled(node.selector, node.operator, None, last.type)
    value: Any = node.value
    if last.coerce is not None:  # validate.go:92-99
        try:
            value = last.coerce(node.value)
        except ValueError as exc:
            why = f"Failed to coerce value {_go_quote(node.value)} for selector {selector}: {exc}"
            raise FilterError(why) from None
    if node.operator in (MATCHES, NOT_MATCHES):  # validate.go:101-117
        value = _go_regexp(value)
    return _Compiled(node.selector, node.operator, value, last.type)


@dataclass(frozen=True)
class _Compiled(_Match):
    """A validated match: value holds the coerced value (or the compiled pattern)."""

    value: Any
    leaf: GoType = _STRING  # the type at the end of the selector


# --------------------------------------------------------------------------------------------------
# Regular expressions: Go's regexp (RE2 syntax, regexp/syntax/parse.go) run on Python's re


class _RegexpError(ValueError):
    """regexp/syntax's *Error: "error parsing regexp: <code>: `<expr>`"."""

    def __init__(self, code: str, expr: str) -> None:
        super().__init__(f"error parsing regexp: {code}: `{expr}`")


_PERL_CLASSES: Final = {"d": "0-9", "s": "\\t\\n\\f\\r ", "w": "0-9A-Za-z_"}  # ASCII, as in Go
#: their negations as members of a class: everything else, non-ASCII digits and spaces included (Python's
#: own \D, \S, \W leave those out)
_NEGATED_PERL_CLASSES: Final = {
    "D": "\\x00-/:-\\U0010ffff", "S": "\\x00-\\x08\\x0b\\x0e-\\x1f!-\\U0010ffff",
    "W": "\\x00-/:-@\\[-\\^`{-\\U0010ffff",
}
_POSIX_CLASSES: Final = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~",
    "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_REPEAT: Final = re.compile(r"\{(\d+)(?:(,)(\d*))?\}")


class _GoRegexp:
    """Translate an RE2 pattern to Python's re, refusing what Go's regexp/syntax refuses, with its message.

    Where the two read the same text differently, the translation keeps Go's meaning: \\d \\s \\w \\b
    are ASCII; `$` is the end of the text unless (?m) is used; a brace that is no repeat ({,3}, {01}) is
    a literal; (?i) in mid-pattern lasts to the end of its group; \\B matches in an empty text; an
    anchor may be repeated (^*); [[:alpha:]], \\Q...\\E, \\z and \\x{...} exist. What only Python has
    (lookaround, backreferences, possessive or stacked repeats, (?x), conditionals) gets Go's error.
    Checked against Go's regexp on thousands of generated patterns: the same errors and the same matches.
    """

    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.pos = 0
        self.out: list[str] = []
        self.multiline = False  # Go's (?m): whether $ is the end of a line, here and now
        # per open group: the (?flags: groups a bare (?flags) opened in it, and (?m) as it was at its (
        self.groups: list[tuple[list[str], bool]] = [([], False)]
        self._opened_at: list[int] = []  # where in out each open group's ( is

    def translate(self) -> str:
        can_repeat, last_repeat = False, -1  # last_repeat: where the repeat just before began
        # out[atom_start:atom_end] is what a repeat would apply to (a bare (?i) or an empty \Q\E is nothing)
        atom_start = atom_end = 0
        repeated = False  # that atom has a repeat already (only possible across a bare (?i))
        while self.pos < len(self.src):
            start = self.pos
            char = self.src[start]
            end = self._repeat_end()
            if end is not None:
                self.pos = end
                if last_repeat >= 0:
                    raise _RegexpError("invalid nested repetition operator", self.src[last_repeat : self.pos])
                if not can_repeat:
                    raise _RegexpError("missing argument to repetition operator", self.src[start : self.pos])
                if repeated:  # a{2}(?i)* is (a{2})* in Go, and an error in re unless grouped
                    self.out.insert(atom_start, "(?:")
                    self.out.insert(atom_end + 1, ")")
                    atom_end += 2
                self.out.insert(atom_end, self.src[start : self.pos])
                last_repeat, atom_end, repeated = start, atom_end + 1, True
                continue
            could_repeat, last_repeat, can_repeat = can_repeat, -1, True
            if (char == "(" and self.src.startswith("(?", start) and self._perl_group()) or (
                    self.src.startswith("\\Q\\E", start) and self._skip(4)):
                can_repeat = could_repeat  # nothing a repeat could apply to: as it was before
                continue
            if char == "(" and self.src.startswith("(?", start):
                can_repeat = False
            elif char == "(":
                self._open("(", 1)
                can_repeat = False
            elif char == "|":
                self.pos += 1
                scoped = self.groups[-1][0]  # the flags go on in the next alternative: close, then reopen
                self.out.append(")" * len(scoped) + "|" + "".join(scoped))
                can_repeat = False
            elif char == ")":
                if len(self.groups) == 1:
                    raise _RegexpError("unexpected )", self.src)
                self.pos += 1
                scoped, self.multiline = self.groups.pop()
                self.out.append(")" * len(scoped) + ")")
            elif char == "\\":
                self.out.append(self._escape_outside())
            elif char == "[":
                self.out.append(self._char_class())
            elif char == "{":  # no repeat: a literal brace, as Go reads it
                self.pos += 1
                self.out.append("\\{")
            elif char in "^$":  # grouped, so that a repeat of it is no error, as in Go
                self.pos += 1
                # Go's $ is the end of the text: Python's $ also matches before a last \n
                self.out.append("(?:\\Z)" if char == "$" and not self.multiline else f"(?:{char})")
            else:
                self.pos += 1
                self.out.append(char)
            atom_start, atom_end, repeated = atom_end, len(self.out), False
            if char == ")":  # the group, from its ( on
                atom_start = self._opened_at.pop()
        if len(self.groups) > 1:
            raise _RegexpError("missing closing )", self.src)
        return "".join(self.out) + ")" * len(self.groups[0][0])

    def _skip(self, width: int) -> bool:
        self.pos += width
        return True

    def _open(self, text: str, width: int) -> None:
        self.pos += width
        self.out.append(text)
        self.groups.append(([], self.multiline))
        self._opened_at.append(len(self.out) - 1)

    def _repeat_end(self) -> int | None:
        """Where a repeat operator here (*, +, ?, {n}, {n,}, {n,m}, each maybe lazy) ends, if it is one."""
        char = self.src[self.pos]
        if char in "*+?":
            end = self.pos + 1
        elif char == "{":
            match = _REPEAT.match(self.src, self.pos)  # parseRepeat
            if match is None or any(len(n) > 1 and n[0] == "0" for n in (match[1], match[3] or "")):
                return None  # Go's parseInt refuses leading zeros: then the brace is a literal
            low, high = int(match[1]), match[3]
            if low > 1000 or (high and (int(high) > 1000 or int(high) < low)):
                raise _RegexpError("invalid repeat count", match[0])
            end = match.end()
        else:
            return None
        return end + 1 if self.src.startswith("?", end) else end

    def _perl_group(self) -> bool:
        """parsePerlFlags: (?P<name> / (?<name> / (?flags) / (?flags:...); True for bare (?flags)."""
        text = self.src[self.pos :]
        named_p = len(text) > 4 and text.startswith("(?P<")
        if named_p or (len(text) > 3 and text.startswith("(?<")):
            end = text.find(">")
            if end < 0:
                raise _RegexpError("invalid named capture", text)
            name = text[4 if named_p else 3 : end]
            if not name or not all(c == "_" or (c.isascii() and c.isalnum()) for c in name):
                raise _RegexpError("invalid named capture", text[: end + 1])
            self._open("(", end + 1)  # a capture; its name changes nothing that matches
            return False
        index, negative, saw_flag, flags = 2, False, False, ""
        while index < len(text):
            char = text[index]
            index += 1
            if char in "imsU":
                if char == "U":
                    raise FilterError("devconsul cannot evaluate the (?U) flag of Go's regexp")
                flags, saw_flag = flags + char, True
            elif char == "-" and not negative:
                flags, negative, saw_flag = flags + "-", True, False
            elif char in ":)" and (saw_flag or not negative):
                python = f"(?{flags}:" if flags else "(?:"
                on, _, off = flags.partition("-")
                if char == ":":
                    self._open(python, index)
                    self.multiline = ("m" in on) or (self.multiline and "m" not in off)
                    return False
                self.pos += index  # a bare (?i): a scoped group to the end of the enclosing one
                self.multiline = ("m" in on) or (self.multiline and "m" not in off)
                if flags:
                    self.out.append(python)
                    self.groups[-1][0].append(python)
                return True
            else:
                break
        raise _RegexpError("invalid or unsupported Perl syntax", text[:index])

    def _escape_outside(self) -> str:
        """A backslash outside a class: Perl's anchors and classes, then parseEscape."""
        pair = self.src[self.pos : self.pos + 2]
        if pair in ("\\A", "\\z"):
            self.pos += 2
            return "(?:\\A)" if pair == "\\A" else "(?:\\Z)"
        if pair in ("\\b", "\\B"):
            self.pos += 2
            # Go's word boundary is ASCII; and Python's \B never matches in an empty text, Go's does
            return "(?a:\\b)" if pair == "\\b" else "(?:(?a:\\B)|\\A\\Z)"
        if pair == "\\C":
            raise _RegexpError("invalid escape sequence", pair)
        if pair == "\\Q":
            end = self.src.find("\\E", self.pos + 2)
            literal = self.src[self.pos + 2 : end if end >= 0 else len(self.src)]
            self.pos = end + 2 if end >= 0 else len(self.src)
            return re.escape(literal)
        perl = self._perl_class()
        if perl is not None:
            return f"[{perl}]"
        return re.escape(chr(self._escape()))

    def _perl_class(self, in_class: bool = False) -> str | None:
        """\\d \\s \\w and their negations (parsePerlClassEscape); \\p classes are refused."""
        pair = self.src[self.pos : self.pos + 2]
        if pair in ("\\p", "\\P"):
            raise FilterError("devconsul cannot evaluate Unicode classes (\\p) of Go's regexp")
        if len(pair) == 2 and pair[0] == "\\" and pair[1] in "dswDSW":
            self.pos += 2
            members = _PERL_CLASSES[pair[1].lower()]
            if pair[1].islower():
                return members
            return _NEGATED_PERL_CLASSES[pair[1]] if in_class else "^" + members
        return None

    def _escape(self) -> int:
        """parseEscape: a single character; anything else is Go's invalid escape."""
        start = self.pos
        self.pos += 1
        if self.pos >= len(self.src):
            raise _RegexpError("trailing backslash at end of expression", "")
        char = self.src[self.pos]
        self.pos += 1
        if char.isascii() and not char.isalnum():
            return ord(char)
        if char in "01234567":
            if char != "0" and self.src[self.pos : self.pos + 1] not in tuple("01234567"):
                raise _RegexpError("invalid escape sequence", self.src[start : self.pos])  # a backreference
            value = int(char)
            for _ in range(2):
                if self.src[self.pos : self.pos + 1] not in tuple("01234567"):
                    break
                value = value * 8 + int(self.src[self.pos])
                self.pos += 1
            return value
        if char == "x":
            return self._hex_escape(start)
        simple = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
        if char in simple:
            return simple[char]
        raise _RegexpError("invalid escape sequence", self.src[start : self.pos])

    def _hex_escape(self, start: int) -> int:
        """\\xHH or \\x{H...}, read as parseEscape reads it, so an error quotes what it had read."""
        hexdigits = "0123456789abcdefABCDEF"

        def refuse() -> _RegexpError:
            return _RegexpError("invalid escape sequence", self.src[start : self.pos])

        if self.pos >= len(self.src):
            raise refuse()
        first = self.src[self.pos]
        self.pos += 1
        if first != "{":
            if self.pos >= len(self.src):
                raise refuse()
            second = self.src[self.pos]
            self.pos += 1
            if first not in hexdigits or second not in hexdigits:
                raise refuse()
            return int(first + second, 16)
        value, digits = 0, 0
        while True:
            if self.pos >= len(self.src):
                raise refuse()
            char = self.src[self.pos]
            self.pos += 1
            if char == "}":
                break
            if char not in hexdigits:
                raise refuse()
            value = value * 16 + int(char, 16)
            if value > 0x10FFFF:
                raise refuse()
            digits += 1
        if digits == 0:
            raise refuse()
        return value

    def _class_char(self) -> int:
        """parseClassChar: one character of a class, escapes included."""
        if self.src[self.pos] == "\\":
            return self._escape()
        self.pos += 1
        return ord(self.src[self.pos - 1])

    def _char_class(self) -> str:
        """parseClass: [...] with POSIX classes, Perl classes, Go's escapes and its range check."""
        start = self.pos
        self.pos += 1
        out = ["["]
        if self.src.startswith("^", self.pos):
            self.pos += 1
            out.append("^")
        first = True
        while first or self.pos >= len(self.src) or self.src[self.pos] != "]":
            first = False
            if self.pos >= len(self.src):
                raise _RegexpError("missing closing ]", self.src[start:])
            if self.src.startswith("[:", self.pos) and len(self.src) - self.pos > 2:
                end = self.src.find(":]", self.pos + 2)
                if end >= 0:
                    name = self.src[self.pos : end + 2]
                    if name[2:-2].lstrip("^") not in _POSIX_CLASSES or name[2:-2].count("^") > int(name[2] == "^"):
                        raise _RegexpError("invalid character class range", name)
                    if name[2] == "^":
                        raise FilterError("devconsul cannot evaluate negated POSIX classes of Go's regexp")
                    out.append(_POSIX_CLASSES[name[2:-2]])
                    self.pos = end + 2
                    continue
            perl = self._perl_class(in_class=True)
            if perl is not None:
                out.append(perl)
                continue
            range_start = self.pos
            low = self._class_char()
            high = low
            if self.src[self.pos : self.pos + 1] == "-" and self.src[self.pos + 1 : self.pos + 2] not in ("", "]"):
                self.pos += 1
                high = self._class_char()
                if high < low:
                    raise _RegexpError("invalid character class range", self.src[range_start : self.pos])
            out.append(re.escape(chr(low)) + ("-" + re.escape(chr(high)) if high != low else ""))
        self.pos += 1
        return "".join(out) + "]"


def _go_regexp(pattern: str) -> re.Pattern[str]:
    """regexp.Compile (validate.go:111-114), or FilterError with its message."""
    try:
        translated = _GoRegexp(pattern).translate()
    except _RegexpError as exc:
        raise FilterError(f"Failed to compile regular expression {_go_quote(pattern)}: {exc}") from None
    try:
        return re.compile(translated)
    except re.error as exc:  # what the translation let through and re still refuses: Go refuses it too
        raise FilterError(f"Failed to compile regular expression {_go_quote(pattern)}: error parsing regexp: "
                          f"{exc}") from None


# --------------------------------------------------------------------------------------------------
# Evaluation (evaluate.go) over devconsul's JSON, read as Go's encoding/json would fill the Go type


def _zero(go_type: GoType) -> Any:
    return {"string": "", "int": 0, "bool": False}.get(go_type.kind)


def _leaf(match: _Compiled, value: Any) -> bool:
    """The match at the end of the selector (evaluate.go:175-213)."""
    kind = match.leaf.kind
    if value is None:
        value = _zero(match.leaf) if kind in _PRIMITIVES else ([] if kind == "slice" else {})
    operator = match.operator
    if operator in (EQUAL, NOT_EQUAL):  # doMatchEqual (evaluate.go:103-108)
        return (value == match.value) != (operator == NOT_EQUAL)
    if operator in (IN, NOT_IN):  # doMatchIn (evaluate.go:110-138)
        if kind == "map":
            found = match.value in value
        elif kind == "slice":
            found = any(item == match.value for item in value)
        else:
            found = match.value in value  # a string: substring
        return found != (operator == NOT_IN)
    if operator in (IS_EMPTY, IS_NOT_EMPTY):  # doMatchIsEmpty (evaluate.go:140-143)
        return (len(value) == 0) != (operator == IS_NOT_EMPTY)
    return (match.value.search(value) is not None) != (operator == NOT_MATCHES)  # doMatchMatches


def _walk(match: _Compiled, depth: int, value: Any, go_type: GoType) -> bool:
    """evaluateMatchExpressionRecurse (evaluate.go:158-279)."""
    if depth >= len(match.selector):
        return _leaf(match, value)
    if go_type.kind == "struct":
        name = match.selector[depth]
        inner = value.get(name) if isinstance(value, dict) else None
        return _walk(match, depth + 1, inner, go_type.fields[name])
    assert go_type.elem is not None
    if go_type.kind == "slice":  # evaluate.go:232-250: any element, at the same depth
        return any(_walk(match, depth, item, go_type.elem) for item in value or ())
    key = match.selector[depth]  # a map (evaluate.go:251-275)
    if not isinstance(value, dict) or key not in value:
        return match.operator not in (EQUAL, IS_NOT_EMPTY, IN)  # evaluate.go:257-269
    return _walk(match, depth + 1, value[key], go_type.elem)


def _evaluate(node: _Node, item: Any, go_type: GoType) -> bool:
    """evaluate (evaluate.go:291-321): and / or short-circuit, left first."""
    if isinstance(node, _Not):
        return not _evaluate(node.operand, item, go_type)
    if isinstance(node, _Binary):
        if node.operator == "and":
            return _evaluate(node.left, item, go_type) and _evaluate(node.right, item, go_type)
        return _evaluate(node.left, item, go_type) or _evaluate(node.right, item, go_type)
    assert isinstance(node, _Compiled)
    return _walk(node, 0, item, go_type)


def compile_filter(text: str, fields: Iterable[str] | GoType) -> Predicate:
    """Compile a Consul ?filter= expression for the items of one endpoint.

    fields is the item's Go type, or the top-level keys of devconsul's JSON for it (the Consul type they
    resemble is used). No fields means an endpoint that takes no filter: Consul never reads the
    parameter there, so nothing is checked and every item is kept. An empty expression keeps every
    item too; one of blanks only is a syntax error, as in Consul.
    """
    go_type = fields if isinstance(fields, GoType) else _type_for_fields(frozenset(fields))
    if go_type is None or text == "":  # an empty expression is the nil filter (filter.go:31-33)
        return lambda _item: True
    tree = _validate(_parse(text), _field_config(go_type).subfields)
    return lambda item: _evaluate(tree, item, go_type)


__all__ = [
    "AGENT_SERVICE",
    "CHECK_SERVICE_NODE",
    "HEALTH_CHECK",
    "KNOWN_DIFFERENCES",
    "NODE",
    "SERVICE_NODE",
    "FilterError",
    "GoType",
    "Predicate",
    "compile_filter",
]
