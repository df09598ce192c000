"""?filter= : a subset of go-bexpr, the expression language Consul's filter parameter takes.

Supported: `Sel == V`, `Sel != V`, `V in Sel`, `V not in Sel`, `Sel contains V`,
`Sel not contains V`, `Sel matches "re"`, `Sel not matches "re"`, `Sel is empty`,
`Sel is not empty`, `and`, `or`, `not`, parentheses; values "quoted", `raw` or bare words.
A selector that runs through a list (Checks.Status) matches when any element matches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

Predicate = Callable[[Any], bool]
_MISSING: Final = object()
_FILTER_TOKEN: Final = re.compile(
    r'\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<op>==|!=)|(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)'
    r"|(?P<word>[^\s()\"`=!]+))"
)


class FilterError(ValueError):
    """A filter expression that cannot be compiled."""


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _FILTER_TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            raise FilterError(f"syntax error at position {pos}: {text[pos : pos + 20]!r}")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    return tokens


def _literal(token: tuple[str, str]) -> str:
    kind, text = token
    if kind == "str":
        return str(json.loads(text))
    if kind == "raw":
        return text[1:-1]
    if kind == "word":
        return text
    raise FilterError(f"expected a value, got {text!r}")


def _resolve(value: Any, path: Sequence[str]) -> list[Any]:
    if not path:
        return [value]
    if isinstance(value, list):
        return [found for item in value for found in _resolve(item, path)]
    if isinstance(value, dict) and path[0] in value:
        return _resolve(value[path[0]], path[1:])
    return [_MISSING]


def _equals(value: Any, literal: str) -> bool:
    if isinstance(value, bool):
        return literal in ("true", "false") and value == (literal == "true")
    if isinstance(value, int | float):
        try:
            return value == float(literal)
        except ValueError:
            return False
    return isinstance(value, str) and value == literal


def _contains(value: Any, literal: str) -> bool:
    if isinstance(value, list):
        return any(isinstance(item, str) and item == literal for item in value)
    if isinstance(value, dict | str):
        return literal in value
    return False


def _is_empty(value: Any) -> bool:
    if value is None or value is _MISSING:
        return True
    return isinstance(value, list | dict | str) and len(value) == 0


def _selector_predicate(path: Sequence[str], test: Callable[[Any], bool], negate: bool) -> Predicate:
    def predicate(item: Any) -> bool:
        return any(test(value) for value in _resolve(item, path)) != negate

    return predicate


def _all_of(left: Predicate, right: Predicate) -> Predicate:
    return lambda item: left(item) and right(item)


def _any_of(left: Predicate, right: Predicate) -> Predicate:
    return lambda item: left(item) or right(item)


def _none_of(inner: Predicate) -> Predicate:
    return lambda item: not inner(item)


class _FilterParser:
    """Recursive descent over the tokens; `fields` are the valid first selector segments."""

    def __init__(self, text: str, fields: frozenset[str]) -> None:
        self._tokens = _tokenize(text)
        self._pos = 0
        self._fields = fields

    def parse(self) -> Predicate:
        if not self._tokens:
            raise FilterError("empty expression")
        predicate = self._or()
        if self._pos != len(self._tokens):
            raise FilterError(f"unexpected {self._tokens[self._pos][1]!r}")
        return predicate

    def _peek(self, offset: int = 0) -> tuple[str, str] | None:
        index = self._pos + offset
        return self._tokens[index] if index < len(self._tokens) else None

    def _is_word(self, word: str, offset: int = 0) -> bool:
        return self._peek(offset) == ("word", word)

    def _next(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise FilterError("unexpected end of expression")
        self._pos += 1
        return token

    def _expect_word(self, word: str) -> None:
        token = self._next()
        if token != ("word", word):
            raise FilterError(f"expected {word!r}, got {token[1]!r}")

    def _or(self) -> Predicate:
        predicate = self._and()
        while self._is_word("or"):
            self._pos += 1
            predicate = _any_of(predicate, self._and())
        return predicate

    def _and(self) -> Predicate:
        predicate = self._not()
        while self._is_word("and"):
            self._pos += 1
            predicate = _all_of(predicate, self._not())
        return predicate

    def _not(self) -> Predicate:
        if self._is_word("not"):
            self._pos += 1
            return _none_of(self._not())
        if self._peek() == ("lp", "("):
            self._pos += 1
            predicate = self._or()
            if self._next() != ("rp", ")"):
                raise FilterError("missing ')'")
            return predicate
        return self._match()

    def _selector(self, token: tuple[str, str]) -> list[str]:
        if token[0] != "word":
            raise FilterError(f"expected a selector, got {token[1]!r}")
        path = token[1].split(".")
        if path[0] not in self._fields:
            raise FilterError(f'Selector "{token[1]}" is not valid')
        return path

    def _match(self) -> Predicate:
        first = self._next()
        if self._is_word("in") or (self._is_word("not") and self._is_word("in", 1)):
            negate = self._is_word("not")
            self._pos += 2 if negate else 1
            literal = _literal(first)
            return _selector_predicate(self._selector(self._next()), lambda v: _contains(v, literal), negate)
        path = self._selector(first)
        token = self._next()
        if token[0] == "op":
            literal = _literal(self._next())
            return _selector_predicate(path, lambda v: _equals(v, literal), token[1] == "!=")
        if token == ("word", "is"):
            negate = self._is_word("not")
            self._pos += 1 if negate else 0
            self._expect_word("empty")
            return _selector_predicate(path, _is_empty, negate)
        negate = token == ("word", "not")
        if negate:
            token = self._next()
        return self._binary(path, token, negate)

    def _binary(self, path: list[str], token: tuple[str, str], negate: bool) -> Predicate:
        literal = _literal(self._next())
        if token == ("word", "contains"):
            return _selector_predicate(path, lambda v: _contains(v, literal), negate)
        if token == ("word", "matches"):
            try:
                pattern = re.compile(literal)
            except re.error as exc:
                raise FilterError(f"invalid regular expression {literal!r}: {exc}") from None
            return _selector_predicate(path, lambda v: isinstance(v, str) and bool(pattern.search(v)), negate)
        raise FilterError(f"unexpected {token[1]!r}")


def compile_filter(text: str, fields: Iterable[str]) -> Predicate:
    """Compile a Consul ?filter= expression for items whose top-level keys are `fields`."""
    return _FilterParser(text, frozenset(fields)).parse()
