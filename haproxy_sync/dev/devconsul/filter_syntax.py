"""The syntax half of ?filter= (see filter.py): Go's quoting and strconv as bexpr's messages and
coercions use them, the syntax tree, and grammar.peg run as a PEG parser with pigeon's semantics, so a
bad expression gets the message Consul answers with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias


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
