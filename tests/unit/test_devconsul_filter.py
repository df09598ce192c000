"""devconsul's ?filter= evaluator answers as go-bexpr v0.1.2 (the version Consul pins) answers.

Each expectation below was checked against go-bexpr v0.1.2 itself, run over Go types that mirror
Consul's (agent/structs CheckServiceNode, HealthCheck, ServiceNode, Node; api.AgentService). The
comment on each names the go-bexpr source line that decides it (v0.1.2 line numbers). Messages are
compared whole: they are what Consul puts in its 500 answer after "Failed to create boolean
expression evaluator: ".
"""

from __future__ import annotations

from typing import Any

import pytest

from haproxy_sync.dev.devconsul.encode import (
    _AGENT_SERVICE_FIELDS,
    _CATALOG_SERVICE_FIELDS,
    _CHECK_FIELDS,
    _HEALTH_FIELDS,
    _NODE_FIELDS,
    _agent_service_json,
    _catalog_service_json,
    _check_json,
    _node_json,
    _service_json,
)
from haproxy_sync.dev.devconsul.filter import (
    CHECK_SERVICE_NODE,
    HEALTH_CHECK,
    FilterError,
    compile_filter,
)
from haproxy_sync.dev.devconsul.records import Check, Service, agent_node

NODE = agent_node("node1", "0b1c", "127.0.0.1", "dc1")


def entry(service: Service, *statuses: str) -> dict[str, Any]:
    """A /v1/health/service entry exactly as devconsul encodes it, with one check per status."""
    checks = [Check(f"c{n}", "check", status, service_id=service.service_id, service_name=service.name,
                    service_tags=service.tags, node=NODE.name) for n, status in enumerate(statuses)]
    return {"Node": _node_json(NODE), "Service": _service_json(service),
            "Checks": [_check_json(check) for check in checks]}


A = entry(Service("a", "web", ("blue", "v1"), port=8080,
                  meta=(("haproxy-sync-host", "a.example"), ("version", "2"), ("track", "canary"))),
          "passing", "critical")
B = entry(Service("b", "web", ("green",)))  # no checks, Meta null
C = entry(Service("web-1", "web", (), "10.0.0.1", 443, ()), "passing")
D = entry(Service("c", "web", ("Blue",), port=9000, meta=(("version", "10"),), weights=(3, 0)), "warning")
ENTRIES = {"a": A, "b": B, "web-1": C, "c": D}


def ids(expression: str) -> list[str]:
    keep = compile_filter(expression, CHECK_SERVICE_NODE)
    return [name for name, item in ENTRIES.items() if keep(item)]


def refused(expression: str, fields: Any = CHECK_SERVICE_NODE) -> str:
    with pytest.raises(FilterError) as error:
        compile_filter(expression, fields)
    return str(error.value)


# --------------------------------------------------------------------------------------------------
# Selectors


def test_a_dotted_selector_walks_struct_fields_and_map_keys() -> None:
    assert ids('Service.ID == "a"') == ["a"]
    # a map[string]string has a wildcard subfield (field_config.go:161-164), so any key can follow
    assert ids('Node.Meta["consul-network-segment"] == ""') == ["a", "b", "web-1", "c"]
    assert ids("Service.Meta.version == 2") == ["a"]
    # an index is only another path segment (grammar.peg:125-130): Service["ID"] is Service.ID
    assert ids('Service["ID"] == "a"') == ["a"]


def test_a_key_with_a_dash_needs_the_index_form() -> None:
    assert ids('Service.Meta["haproxy-sync-host"] == "a.example"') == ["a"]
    assert ids("Service.Meta[`haproxy-sync-host`] contains example") == ["a"]
    # Identifier is [a-zA-Z][a-zA-Z0-9_]* (grammar.peg:119): the dotted form stops at the dash
    assert refused('Service.Meta.haproxy-sync-host == "a"') == (
        '1:21 (20): no match found, expected: "!=", ".", "==", "[", [ \\t\\r\\n] or [a-zA-Z0-9_]')
    assert refused("Service.Meta[haproxy] == 1") == '1:14 (13): rule "index": Invalid index'  # grammar.peg:131-132
    assert refused('Service.Meta["x" == 1') == '1:18 (17): rule "index": Unclosed index expression'


def test_selectors_are_checked_against_the_go_type_before_any_item() -> None:
    # validate.go:60-69: the first segment that is no field of the type is named
    assert refused('Service.NoSuchField == "x"') == 'Selector "Service.NoSuchField" is not valid'
    # RaftIndex is tagged bexpr:"-" in agent/structs, so its fields are not selectable (field_config.go:197)
    assert refused("Service.CreateIndex == 1") == 'Selector "Service.CreateIndex" is not valid'
    # a string has no subfields
    assert refused("Service.Meta.version.x == 1") == 'Selector "Service.Meta.version.x" is not valid'
    # even with nothing to filter, as Consul creates the filter before it reads (filter.go:34-40)
    assert compile_filter('Service.ID == "nobody"', CHECK_SERVICE_NODE)(B) is False


# --------------------------------------------------------------------------------------------------
# Operators and values


def test_values_quoted_raw_or_unquoted() -> None:
    assert ids('Service.ID == "a"') == ids("Service.ID == `a`") == ids("Service.ID == a") == ["a"]
    # an unquoted value is a selector, its segments joined with dots (grammar.peg:137)
    assert ids('Service.ID == "web-1"') == ["web-1"]
    assert refused("Service.ID == web-1") == (
        '1:18 (17): no match found, expected: ".", "[", [ \\t\\r\\n], [a-zA-Z0-9_] or EOF')
    # "10.0.0.1" unquoted is a number that does not end where a number must (grammar.peg:141-147);
    # the message Consul answered in hashicorp/consul#9441
    assert refused("Node.Address == 10.0.0.1") == '1:21 (20): rule "number": Invalid number literal'


def test_double_quoted_strings_are_go_strings() -> None:
    # strconv.Unquote (grammar.peg:152): escapes are read, and one Go does not know is an error
    assert ids('Service.ID == "\\x61"') == ids('Service.ID == "\\141"') == ["a"]
    assert refused('Service.ID matches "^web\\d"') == '1:20 (19): rule "string": invalid syntax'
    assert ids("Service.ID matches `^web-\\d$`") == ["web-1"]  # a raw string keeps the backslash
    # a "..." ends at the first quote, escaped or not (grammar.peg:158): "a\" is the literal here
    assert refused('Service.ID == "a\\"b"') == '1:15 (14): rule "string": invalid syntax'
    assert refused('Service.ID == "x') == '1:17 (16): rule "string": Unterminated string literal'
    # each bad literal is reported, one per line (pigeon's errList)
    assert refused('Service.ID == "\\q" or Service.ID == "\\z"') == (
        '1:15 (14): rule "string": invalid syntax\n1:37 (36): rule "string": invalid syntax')


def test_values_are_coerced_to_the_field_type() -> None:
    # CoerceInt is strconv.ParseInt(v, 0, 0) (coerce.go:11-14): base prefixes count, quoted or not
    assert ids("Service.Port == 8080") == ids('Service.Port == "8080"') == ids('Service.Port == "0x1F90"') == ["a"]
    assert ids('Service.Port == "017"') == []  # octal 15
    assert refused("Service.Port == abc") == (
        'Failed to coerce value "abc" for selector "Service.Port": strconv.ParseInt: parsing "abc": invalid syntax')
    # CoerceBool is strconv.ParseBool (coerce.go:91-93)
    assert ids("Service.EnableTagOverride == F") == ["a", "b", "web-1", "c"]
    assert refused("Service.EnableTagOverride == yes") == (
        'Failed to coerce value "yes" for selector "Service.EnableTagOverride": '
        'strconv.ParseBool: parsing "yes": invalid syntax')
    assert ids("Service.Weights.Passing == 3") == ["c"]


def test_each_field_takes_only_its_operators() -> None:
    # field_config.go:124-130: a list of strings takes in / not in / is (not) empty, not ==
    assert refused('Service.Tags == "blue"') == 'Invalid match operator "Equal" for selector "Service.Tags"'
    # contains is In (grammar.peg:93-95), and a number takes == and != only (field_config.go:89-93)
    assert refused("Service.Port contains 1") == 'Invalid match operator "In" for selector "Service.Port"'
    assert refused('Service.Meta matches "x"') == 'Invalid match operator "Matches" for selector "Service.Meta"'
    assert refused("Service is empty") == 'Invalid match operator "Is Empty" for selector "Service"'


def test_in_and_contains_depend_on_what_they_look_into() -> None:
    # doMatchIn (evaluate.go:110-138): a list's elements, exactly; a map's keys; a string's substrings
    assert ids('Service.Tags contains "blue"') == ids('"blue" in Service.Tags') == ["a"]
    assert ids('"bl" in Service.Tags') == []
    assert ids('"version" in Service.Meta') == ["a", "c"]
    assert ids('"version" not in Service.Meta') == ["b", "web-1"]
    assert ids('Service.ID contains "eb"') == ["web-1"]
    assert ids('"1" in Service.ID') == ["web-1"]


def test_is_empty_on_lists_and_maps() -> None:
    # doMatchIsEmpty is len() == 0 (evaluate.go:140-143); a null Meta is a nil map, empty too
    assert ids("Service.Tags is empty") == ["web-1"]
    assert ids("Service.Meta is empty") == ["b", "web-1"]
    assert ids("Service.Meta is not empty") == ["a", "c"]
    assert ids("Checks is empty") == ["b"]


def test_matches_is_an_unanchored_re2_search() -> None:
    assert ids('Service.ID matches "^[ab]$"') == ["a", "b"]
    assert ids('Service.ID matches "1"') == ["web-1"]
    assert ids('Service.ID not matches "^[ab]$"') == ["web-1", "c"]
    # RE2 has no lookaround: Go's error, not Python's acceptance (validate.go:111-114)
    assert refused('Service.ID matches "(?=a)"') == (
        'Failed to compile regular expression "(?=a)": error parsing regexp: invalid or unsupported Perl syntax: `(?=`')
    assert refused('Service.ID matches "a**"') == (
        'Failed to compile regular expression "a**": error parsing regexp: invalid nested repetition operator: `**`')
    assert refused("Service.ID matches `(a)\\1`") == (
        'Failed to compile regular expression "(a)\\\\1": error parsing regexp: invalid escape sequence: `\\1`')
    # where re reads the same text otherwise, Go's reading wins: {,1} is literal, \d is ASCII, $ is the end
    assert ids('Service.ID matches "a{,1}"') == []
    assert compile_filter('Service.ID matches "^\\\\d$"', CHECK_SERVICE_NODE)(entry(Service("\u0663", "web"))) is False
    assert compile_filter('Service.ID matches "a$"', CHECK_SERVICE_NODE)(entry(Service("a\n", "web"))) is False


def test_and_or_not_and_parentheses() -> None:
    # or binds looser than and (grammar.peg:16-34); not binds tightest (grammar.peg:36)
    assert ids("Service.ID == a or Service.ID == b and Service.Port == 443") == ["a"]
    assert ids("(Service.ID == a or Service.ID == b) and Service.Port == 0") == ["b"]
    assert ids("not Service.ID == a and Service.Port != 0") == ["web-1", "c"]
    assert ids("not not Service.ID == a") == ["a"]
    # and / or need whitespace on both sides (grammar.peg:16, 26); == does not (grammar.peg:75)
    assert ids("Service.ID==a") == ["a"]
    assert refused('Service.ID == "a" and(Service.Port == 1)') == '1:22 (21): no match found, expected: [ \\t\\r\\n]'
    assert refused("(Service.ID == a") == '1:17 (16): rule "grouping": Unmatched parentheses'  # grammar.peg:55-57


def test_the_message_for_a_bare_word_is_consuls() -> None:
    # what Consul answered in hashicorp/consul#7338 for the filter "foo"
    assert refused("foo") == '1:4 (3): no match found, expected: "!=", ".", "==", "[", [ \\t\\r\\n] or [a-zA-Z0-9_]'
    # an empty expression is no filter at all (filter.go:31-33), but blanks are an expression
    assert ids("") == ["a", "b", "web-1", "c"]
    assert refused(" ") == (
        '1:2 (1): no match found, expected: "(", "-", "0", "\\"", "`", "not", [ \\t\\r\\n], [1-9] or [a-zA-Z]')


# --------------------------------------------------------------------------------------------------
# Lists: every operator, the negated ones too, applies to each element, and one true element is enough


def test_equal_on_a_list_selector_is_any_element() -> None:
    # evaluate.go:232-250: "operations on slices are implicity ANY operations"
    assert ids('Checks.Status == "critical"') == ["a"]
    assert ids("Checks.Status == passing") == ["a", "web-1"]


def test_not_equal_on_a_list_selector_is_some_element_not_all() -> None:
    # != is applied per element (evaluate.go:180-185) inside the ANY loop: a's passing check is enough,
    # although its other check is critical; b has no checks, so no element, so no match
    assert ids('Checks.Status != "critical"') == ["a", "web-1", "c"]
    # "no check is critical" is a negation of the whole match instead
    assert ids('not Checks.Status == "critical"') == ["b", "web-1", "c"]


def test_other_operators_on_a_list_selector() -> None:
    assert ids('"pass" in Checks.Status') == ["a", "web-1"]  # a substring of some element's status
    assert ids('Checks.Status matches "^warn"') == ["c"]
    assert ids('Checks.ServiceTags contains "blue"') == ["a"]  # a list inside the list
    assert refused("Checks.Status is empty") == 'Invalid match operator "Is Empty" for selector "Checks.Status"'


# --------------------------------------------------------------------------------------------------
# A missing map key: == and in are false; every other operator is true


@pytest.mark.parametrize(("expression", "matches"), [
    ('Service.Meta.nope == "x"', False),
    ('Service.Meta.nope != "x"', True),
    ('Service.Meta.nope matches "x"', True),  # evaluate.go:262-267: the default branch, matches included
    ('Service.Meta.nope not matches "x"', True),
    ('"x" in Service.Meta.nope', False),
    ('"x" not in Service.Meta.nope', True),
])
def test_a_missing_map_key(expression: str, matches: bool) -> None:
    # evaluate.go:257-269 (is empty would be true too, but no map of Consul's types holds lists or maps);
    # a has Meta without "nope", b has no Meta at all (a nil map)
    assert compile_filter(expression, CHECK_SERVICE_NODE)(A) is matches
    assert compile_filter(expression, CHECK_SERVICE_NODE)(B) is matches


def test_the_docs_canary_example_keeps_instances_without_the_key() -> None:
    # docs/routing.md's example: an instance with no track meta is kept
    assert ids('Service.Meta.track != "canary"') == ["b", "web-1", "c"]


# --------------------------------------------------------------------------------------------------
# The endpoints' types, picked from the keys devconsul passes


def test_each_endpoint_filters_on_its_own_type() -> None:
    check = _check_json(Check("c1", "ttl", "critical", service_id="a", service_tags=("blue",), node=NODE.name))
    assert compile_filter('CheckID == c1 and "blue" in ServiceTags', _CHECK_FIELDS)(check) is True
    assert refused('Checks.Status == "x"', _CHECK_FIELDS) == 'Selector "Checks" is not valid'
    assert refused("Definition.HTTP == x", _CHECK_FIELDS) == 'Selector "Definition" is not valid'  # bexpr:"-"
    service = Service("a", "web", ("blue",), port=80)
    assert compile_filter('"blue" in ServiceTags and ServicePort == 80', _CATALOG_SERVICE_FIELDS)(
        _catalog_service_json(service, NODE)) is True
    assert compile_filter('Service == web and "blue" in Tags', _AGENT_SERVICE_FIELDS)(
        _agent_service_json(service, "dc1")) is True
    assert refused("Datacenter == dc1", _AGENT_SERVICE_FIELDS) == 'Selector "Datacenter" is not valid'  # bexpr:"-"
    assert compile_filter("Meta is not empty and Datacenter == dc1", _NODE_FIELDS)(_node_json(NODE)) is True
    assert compile_filter('Checks.Status == "critical"', _HEALTH_FIELDS)(A) is True
    assert compile_filter("Status == critical", HEALTH_CHECK)(check) is True


def test_an_endpoint_without_filtering_ignores_the_parameter() -> None:
    # Consul's handlers that take no filter never read it; nothing is checked, everything kept
    assert compile_filter("not even ( valid", ())({"anything": 1}) is True
