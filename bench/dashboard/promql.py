"""Just enough PromQL to evaluate the dashboard's own queries over recorded scrapes.

Why a hand-written evaluator: Prometheus cannot be installed here, and the picture must show what
the dashboard's queries give, not what a re-implementation of each panel in Python would give. So
the query text from the dashboard JSON is parsed and evaluated as written. Only what those queries
use is implemented; anything else is a :class:`PromQLError` naming the query, never a silent guess:

* vector selectors with label matchers (``=``, ``!=``, ``=~``, ``!~``) and range selectors ``[1m]``;
* ``rate()`` with Prometheus's extrapolation and counter-reset handling (``extrapolatedRate``), and
  ``increase()`` as that rate times the range;
* ``sum``, ``max`` and ``min`` with an optional ``by (...)`` clause (before or after the argument);
* ``+`` and ``-`` between two vectors matched one to one on all their labels, or a vector and a number;
* the dashboard's Grafana variables, replaced first (:func:`grafana_variables`): every instance and
  backend selected, ``$__rate_interval`` a minute;
* ``histogram_quantile()`` over classic ``le`` buckets, with Prometheus's bucket interpolation,
  monotonicity fix and "+Inf bucket gives the second-highest bound" rule;
* a vector/scalar comparison used as a filter (``== 1`` and its siblings, without ``bool``);
* number literals.

Evaluation follows Prometheus's data model for the recorded data: one sample per series per scrape,
a series missing from a scrape (or every series of a target whose scrape failed) is stale from that
scrape on, instant selectors take the sample of the evaluation time's scrape, range selectors the
samples of the scrapes in ``(t - range, t]``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

Labels = frozenset[tuple[str, str]]
Vector = dict[Labels, float]


class PromQLError(Exception):
    """A query uses PromQL this evaluator does not implement, or is malformed."""


# ---- the recorded data ------------------------------------------------------------------------


@dataclass
class Store:
    """Samples of every recorded series at each scrape round: ``None`` where the series was absent.

    ``times`` are the rounds' timestamps (seconds since the epoch); every list in ``series`` has one
    entry per round. Labels include ``__name__``.
    """

    times: list[float]
    series: dict[Labels, list[float | None]]

    def names(self) -> set[str]:
        """Every metric name with at least one sample."""
        return {
            dict(labels)["__name__"]
            for labels, values in self.series.items()
            if any(value is not None for value in values)
        }


# ---- parsing ----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)(?![A-Za-z_])
      | (?P<duration>(?:[0-9]+(?:ms|s|m|h|d|w|y))+)
      | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|=~|!~|>=|<=|[(){}\[\],=<>+\-])
    )""",
    re.VERBOSE,
)
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}


@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found


@dataclass(frozen=True)
class Selector:
    matchers: tuple[Matcher, ...]
    range_seconds: float | None = None

    @property
    def metric(self) -> str:
        return next(m.value for m in self.matchers if m.label == "__name__" and m.op == "=")


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Aggregate:
    op: str
    by: tuple[str, ...] | None
    arg: Node


@dataclass(frozen=True)
class Compare:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Arith:
    """``left + right`` or ``left - right``: vectors matched one to one on all their labels."""

    op: str
    left: Node
    right: Node


Node = Number | Selector | Call | Aggregate | Compare | Arith

_FUNCTIONS = {"rate": 1, "increase": 1, "histogram_quantile": 2}
_AGGREGATIONS: dict[str, Callable[[float, float], float]] = {"sum": lambda a, b: a + b, "max": max, "min": min}
_ARITHMETIC: dict[str, Callable[[float, float], float]] = {"+": lambda a, b: a + b, "-": lambda a, b: a - b}
#: What the dashboard's Grafana variables stand for when this evaluator draws it from one sandbox:
#: every instance and backend, and a rate window of a few scrape intervals.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*", "$backend": ".*"}


def grafana_variables(expr: str) -> str:
    """``expr`` with the dashboard's template variables replaced as Grafana would (all selected)."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise PromQLError(f"cannot read {text[position:position + 20]!r} in {text!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.position = 0

    def fail(self, what: str) -> PromQLError:
        return PromQLError(f"{what} in {self.text!r} (this evaluator implements only the dashboard's subset)")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        token = self.peek()
        if token is None or (value is not None and token[1] != value) or (kind is not None and token[0] != kind):
            raise self.fail(f"expected {value or kind}, found {token[1] if token else 'the end'}")
        self.position += 1
        return token[1]

    def parse(self) -> Node:
        node = self.expression()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    def expression(self) -> Node:
        left = self.additive()
        token = self.peek()
        if token is not None and token[0] == "op" and token[1] in _COMPARISONS:
            self.position += 1
            if self.peek() == ("ident", "bool"):
                raise self.fail("the bool modifier is not implemented")
            return Compare(token[1], left, self.additive())
        return left

    def additive(self) -> Node:
        node = self.primary()
        while (token := self.peek()) is not None and token[0] == "op" and token[1] in _ARITHMETIC:
            self.position += 1
            node = Arith(token[1], node, self.primary())
        return node

    def primary(self) -> Node:
        token = self.peek()
        if token is None:
            raise self.fail("unexpected end")
        kind, value = token
        if kind == "number":
            self.position += 1
            return Number(float(value))
        if value == "(":
            self.position += 1
            inner = self.expression()
            self.take(")")
            return inner
        if kind != "ident":
            raise self.fail(f"unexpected {value!r}")
        if value in _AGGREGATIONS:
            return self.aggregate()
        following = self.tokens[self.position + 1] if self.position + 1 < len(self.tokens) else None
        if following == ("op", "("):
            return self.call()
        return self.selector()

    def labels(self) -> tuple[str, ...]:
        self.take("(")
        names: list[str] = []
        while self.peek() != ("op", ")"):
            names.append(self.take(kind="ident"))
            if self.peek() == ("op", ","):
                self.position += 1
        self.take(")")
        return tuple(names)

    def aggregate(self) -> Aggregate:
        op = self.take(kind="ident")
        by: tuple[str, ...] | None = None
        if self.peek() == ("ident", "by"):
            self.position += 1
            by = self.labels()
        elif self.peek() == ("ident", "without"):
            raise self.fail("without() is not implemented")
        self.take("(")
        arg = self.expression()
        self.take(")")
        if self.peek() == ("ident", "by"):
            self.position += 1
            by = self.labels()
        return Aggregate(op, by, arg)

    def call(self) -> Call:
        name = self.take(kind="ident")
        if name not in _FUNCTIONS:
            raise self.fail(f"function {name}() is not implemented")
        self.take("(")
        args: list[Node] = [self.expression()]
        while self.peek() == ("op", ","):
            self.position += 1
            args.append(self.expression())
        self.take(")")
        if len(args) != _FUNCTIONS[name]:
            raise self.fail(f"{name}() takes {_FUNCTIONS[name]} arguments")
        return Call(name, tuple(args))

    def selector(self) -> Selector:
        matchers = [Matcher("__name__", "=", self.take(kind="ident"))]
        if self.peek() == ("op", "{"):
            self.position += 1
            while self.peek() != ("op", "}"):
                label = self.take(kind="ident")
                op = self.take(kind="op")
                if op not in ("=", "!=", "=~", "!~"):
                    raise self.fail(f"label matcher {op!r}")
                raw = self.take(kind="string")
                matchers.append(Matcher(label, op, bytes(raw[1:-1], "utf-8").decode("unicode_escape")))
                if self.peek() == ("op", ","):
                    self.position += 1
            self.take("}")
        range_seconds = None
        if self.peek() == ("op", "["):
            self.position += 1
            text = self.take(kind="duration")
            range_seconds = sum(int(n) * _DURATION_SECONDS[u] for n, u in _DURATION_PART.findall(text))
            self.take("]")
        return Selector(tuple(matchers), range_seconds)


def parse(text: str) -> Node:
    """The syntax tree of ``text``, or :class:`PromQLError` for anything outside the subset."""
    return _Parser(text).parse()


def metric_names(node: Node) -> list[str]:
    """The metric names a query selects, in order (for checking them against real scrapes)."""
    if isinstance(node, Selector):
        return [node.metric]
    if isinstance(node, Call):
        return [name for arg in node.args for name in metric_names(arg)]
    if isinstance(node, Aggregate):
        return metric_names(node.arg)
    if isinstance(node, Compare | Arith):
        return metric_names(node.left) + metric_names(node.right)
    return []


# ---- evaluation -------------------------------------------------------------------------------


def _without(labels: Labels, *names: str) -> Labels:
    return frozenset((k, v) for k, v in labels if k not in names)


def extrapolated_rate(samples: Sequence[tuple[float, float]], range_start: float, range_end: float) -> float | None:
    """``rate()`` of one series' samples in a window, as Prometheus computes it (``extrapolatedRate``).

    Counter resets add the value before the reset; the increase is extrapolated towards the window's
    edges when the samples reach within 1.1 average intervals of them (else by half an interval), and
    never to before the counter would have been zero.
    """
    if len(samples) < 2:
        return None
    first_t, first_v = samples[0]
    last_t, last_v = samples[-1]
    increase = last_v - first_v
    previous = first_v
    for _, value in samples[1:]:
        if value < previous:
            increase += previous
        previous = value
    sampled = last_t - first_t
    if sampled <= 0:
        return None
    average = sampled / (len(samples) - 1)
    to_start = first_t - range_start
    to_end = range_end - last_t
    if increase > 0 and first_v >= 0:
        to_zero = sampled * (first_v / increase)
        to_start = min(to_start, to_zero)
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    return increase * (interval / sampled) / (range_end - range_start)


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """``histogram_quantile`` of one set of (upper bound, cumulative count) buckets, as Prometheus does it."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = merged.get(bound, 0.0) + count
    ordered = sorted(merged.items())
    if not ordered or not math.isinf(ordered[-1][0]):
        return math.nan
    fixed: list[tuple[float, float]] = []
    highest = -math.inf
    for bound, count in ordered:  # ensureMonotonic: rates of buckets can be off by float error
        highest = max(highest, count)
        fixed.append((bound, highest))
    if len(fixed) < 2:
        return math.nan
    observations = fixed[-1][1]
    if observations == 0 or math.isnan(observations):
        return math.nan
    rank = q * observations
    index = next(i for i, (_, count) in enumerate(fixed) if count >= rank)
    if index == len(fixed) - 1:
        return fixed[-2][0]
    if index == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    start, end, count = 0.0, fixed[index][0], fixed[index][1]
    if index > 0:
        start = fixed[index - 1][0]
        count -= fixed[index - 1][1]
        rank -= fixed[index - 1][1]
    return start + (end - start) * (rank / count)


class Evaluator:
    """Evaluates parsed queries at the store's scrape rounds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._selected: dict[tuple[Matcher, ...], list[tuple[Labels, list[float | None]]]] = {}

    def _select(self, selector: Selector) -> list[tuple[Labels, list[float | None]]]:
        if selector.matchers not in self._selected:
            self._selected[selector.matchers] = [
                (labels, values)
                for labels, values in self.store.series.items()
                if all(m.matches(dict(labels)) for m in selector.matchers)
            ]
        return self._selected[selector.matchers]

    def instant(self, node: Node, index: int) -> Vector | float:
        """The value of ``node`` at scrape round ``index``: a vector (labels -> value) or a scalar."""
        if isinstance(node, Number):
            return node.value
        if isinstance(node, Selector):
            if node.range_seconds is not None:
                raise PromQLError("a range selector outside rate() is not implemented")
            return {labels: v for labels, values in self._select(node) if (v := values[index]) is not None}
        if isinstance(node, Call) and node.function == "rate":
            return self._rate(node.args[0], index)
        if isinstance(node, Call) and node.function == "increase":  # Prometheus: the rate times the range
            selector = node.args[0]
            assert isinstance(selector, Selector) and selector.range_seconds is not None
            return {labels: v * selector.range_seconds for labels, v in self._rate(selector, index).items()}
        if isinstance(node, Call) and node.function == "histogram_quantile":
            q = self.instant(node.args[0], index)
            vector = self.instant(node.args[1], index)
            if not isinstance(q, float) or not isinstance(vector, dict):
                raise PromQLError("histogram_quantile(scalar, vector) expected")
            groups: dict[Labels, list[tuple[float, float]]] = {}
            for labels, value in vector.items():
                le = dict(labels).get("le")
                if le is None:
                    continue  # Prometheus ignores series without le here
                groups.setdefault(_without(labels, "le", "__name__"), []).append((float(le), value))
            return {labels: bucket_quantile(q, buckets) for labels, buckets in groups.items()}
        if isinstance(node, Aggregate):
            vector = self.instant(node.arg, index)
            if not isinstance(vector, dict):
                raise PromQLError("sum() of a scalar is not implemented")
            combine = _AGGREGATIONS[node.op]
            groups: Vector = {}
            for labels, value in vector.items():
                key = frozenset((k, v) for k, v in labels if node.by is not None and k in node.by)
                groups[key] = combine(groups[key], value) if key in groups else value
            return groups
        if isinstance(node, Arith):
            left, right = self.instant(node.left, index), self.instant(node.right, index)
            apply = _ARITHMETIC[node.op]
            if isinstance(left, dict) and isinstance(right, dict):
                return {labels: apply(value, right[labels]) for labels, value in left.items() if labels in right}
            if isinstance(left, dict) and isinstance(right, float):
                return {labels: apply(value, right) for labels, value in left.items()}
            raise PromQLError("only vector <op> vector and vector <op> scalar arithmetic is implemented")
        if isinstance(node, Compare):
            left, right = self.instant(node.left, index), self.instant(node.right, index)
            test = _COMPARISONS[node.op]
            if isinstance(left, dict) and isinstance(right, float):
                return {labels: value for labels, value in left.items() if test(value, right)}
            raise PromQLError("only vector <op> scalar comparisons are implemented")
        raise PromQLError(f"cannot evaluate {node!r}")

    def _rate(self, node: Node, index: int) -> Vector:
        if not isinstance(node, Selector) or node.range_seconds is None:
            raise PromQLError("rate() needs a range selector")
        end = self.store.times[index]
        start = end - node.range_seconds
        first = index
        while first > 0 and self.store.times[first - 1] > start:
            first -= 1
        out: Vector = {}
        for labels, values in self._select(node):
            samples = [(self.store.times[i], v) for i in range(first, index + 1) if (v := values[i]) is not None]
            value = extrapolated_rate(samples, start, end)
            if value is not None:
                out[_without(labels, "__name__")] = value
        return out

    def range_query(self, text: str) -> dict[Labels, list[float | None]]:
        """``text`` at every scrape round: each result series with one value (or ``None``) per round."""
        node = parse(text)
        result: dict[Labels, list[float | None]] = {}
        rounds = len(self.store.times)
        for index in range(rounds):
            value = self.instant(node, index)
            if isinstance(value, float):
                value = {frozenset(): value}
            for labels, sample in value.items():
                result.setdefault(labels, [None] * rounds)[index] = sample
        return result


def legend(template: str, labels: Labels) -> str:
    """Grafana's ``legendFormat``: ``{{label}}`` replaced by the label's value (empty when absent)."""
    values = dict(labels)
    if not template:
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(values.items()) if k != "__name__")
        return f"{values.get('__name__', '')}{{{inner}}}"
    return re.sub(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", lambda m: values.get(m.group(1), ""), template)
