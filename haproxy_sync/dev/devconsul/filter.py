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

The parts: ``filter_syntax.py`` (Go quoting and strconv, the syntax tree, the PEG parser of
grammar.peg), ``filter_regexp.py`` (RE2 patterns translated to Python's re), and here the Go types,
validation, evaluation and ``compile_filter``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from haproxy_sync.dev.devconsul.filter_regexp import _go_regexp
from haproxy_sync.dev.devconsul.filter_syntax import (
    EQUAL,
    IN,
    IS_EMPTY,
    IS_NOT_EMPTY,
    MATCHES,
    NOT_EQUAL,
    NOT_IN,
    NOT_MATCHES,
    FilterError,
    _Binary,
    _go_quote,
    _Match,
    _Node,
    _Not,
    _parse,
    _parse_bool,
    _parse_int,
)

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
