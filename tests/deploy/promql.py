"""Just enough PromQL reading for the tests that keep the alert rules and the dashboard in step with
what haproxy-sync and HAProxy really export: the vector selectors of an expression (metric name and
label matchers), and the series a Prometheus exposition declares.

Why not Prometheus's own parser: it is Go (promql/parser), and promtool has no command that prints
an expression's selectors. The reader below walks tokens; it knows the functions, aggregations and
keywords the repository's expressions use, and its own tests (test_alerts.py) pin what it reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "inf", "nan",
})
#: Aggregation operators: their by/without clause may come before the parenthesis (``sum by (x) (...)``).
AGGREGATIONS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
})
#: Keywords followed by a parenthesised list of label names, not of expressions.
LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})

_TOKEN = re.compile(r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<braces>\{(?:"(?:[^"\\]|\\.)*"|[^}"])*\})
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![a-zA-Z0-9_:]))
  | (?P<number>(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)(?![a-zA-Z_:]))
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<other>[^\s])
""", re.VERBOSE)
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


@dataclass(frozen=True)
class Selector:
    """One vector selector: ``name{label op "value", ...}``."""

    name: str
    matchers: tuple[tuple[str, str, str], ...]

    def matcher(self, label: str) -> tuple[str, str] | None:
        """(op, value) of the first matcher on ``label``, if any."""
        return next(((op, value) for name, op, value in self.matchers if name == label), None)


def _matchers(braces: str) -> tuple[tuple[str, str, str], ...]:
    body, found, at = braces[1:-1], [], 0
    while at < len(body.rstrip()):
        match = _MATCHER.match(body, at)
        if match is None:
            raise ValueError(f"cannot read label matchers {braces!r} at {body[at:]!r}")
        found.append((match.group(1), match.group(2), match.group(3)))
        at = match.end()
    return tuple(found)


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of ``expr`` in order; function and aggregation names and the label lists
    of by/without/on/ignoring/group_* are not selectors."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr)]
    found: list[Selector] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "ident" and text.lower() in LABEL_LISTS and nxt[0] == "open":
            depth, i = 0, i + 1
            while i < len(tokens):  # skip the parenthesised label names
                depth += {"open": 1, "close": -1}.get(tokens[i][0] or "", 0)
                i += 1
                if depth == 0:
                    break
            continue
        if kind == "ident" and nxt[0] != "open" and text.lower() not in KEYWORDS | AGGREGATIONS:
            matchers = _matchers(nxt[1]) if nxt[0] == "braces" else ()
            found.append(Selector(text, matchers))
        elif kind == "braces" and (i == 0 or tokens[i - 1][0] != "ident"):
            raise ValueError(f"a selector without a metric name is not read here: {text}")
        i += 1
    return found


#: The sample names a family of each type exposes (prometheus_client's parser strips these).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "info": ("_info",),
}


@dataclass
class Exposition:
    """What one scrape declares: every series name it could answer, and the samples it had."""

    names: set[str]
    samples: dict[str, list[dict[str, str]]]

    @classmethod
    def parse(cls, text: str) -> Exposition:
        names: set[str] = set()
        samples: dict[str, list[dict[str, str]]] = {}
        for family in text_string_to_metric_families(text):
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
            for sample in family.samples:
                names.add(sample.name)
                samples.setdefault(sample.name, []).append(dict(sample.labels))
        return cls(names, samples)

    def matches(self, selector: Selector, ignore: frozenset[str] = frozenset()) -> bool:
        """Whether some sample of the selector's name passes its ``=`` and ``=~`` matchers (labels in
        ``ignore`` and values holding a Grafana variable are not checked). A regex that is a list of
        words (``applied|recovered``) must find each word: one misspelt alternative is drift too."""
        wanted = [(label, op, value) for label, op, value in selector.matchers
                  if op in ("=", "=~") and label not in ignore and "$" not in value]
        if not wanted:
            return True  # nothing left to look for: the name alone is checked (by ``names``)
        for at, (label, op, value) in enumerate(wanted):
            if op == "=~" and "|" in value and re.fullmatch(r"[\w|-]+", value):
                rest = tuple(wanted[:at] + wanted[at + 1:])
                return all(self.matches(Selector(selector.name, (*rest, (label, "=", word))))
                           for word in value.split("|"))
        for labels in self.samples.get(selector.name, []):
            if all((labels.get(label, "") == value) if op == "=" else re.fullmatch(value, labels.get(label, ""))
                   for label, op, value in wanted):
                return True
        return False
