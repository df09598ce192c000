"""Go's regexp (RE2 syntax) for the ``matches`` operators of ?filter= (see filter.py): translated to
Python's re, refusing what Go refuses with Go's message.
"""

from __future__ import annotations

import re
from typing import Final

from haproxy_sync.dev.devconsul.filter_syntax import FilterError, _go_quote

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
