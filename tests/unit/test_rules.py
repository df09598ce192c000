"""The allowlists, the command builder and the template's output filter refuse what they must."""

from __future__ import annotations

from pathlib import Path

import pytest

from haproxy_sync import commands, haproxy, rules
from haproxy_sync.catalog import ForeignEntry, parse_health_entries
from haproxy_sync.config import load_settings
from haproxy_sync.render import TemplateError, load_template
from tests.helpers import prepared_for

SEPARATORS = [";", "\n", "\r", " ", "\t", "#", "\\", '"', "'", "\0", "%", "\u2028", "\x85"]


@pytest.mark.parametrize("kind", list(rules.Kind))
def test_every_kind_refuses_its_example_and_says_which_kind(kind: rules.Kind) -> None:
    for value in rules.REFUSED_EXAMPLES[kind]:
        with pytest.raises(rules.Refused) as refused:
            rules.CHECKS[kind](value)
        assert kind.value in str(refused.value)


@pytest.mark.parametrize("zoned", ["::1%eth0", "fe80::1%1", "::1%x;shutdown frontend http", "::1%\n program x",
                                   "fe80::1%]:80 check", "::1%"])
def test_ipv6_zone_ids_are_refused_by_name(zoned: str) -> None:
    with pytest.raises(rules.Refused, match="zone id"):
        rules.address(zoned)


def test_addresses_come_back_canonical_and_typed() -> None:
    assert rules.address("10.0.0.1") == "10.0.0.1" and isinstance(rules.address("10.0.0.1"), rules.Checked)
    assert rules.address("2001:DB8:0::5") == "2001:db8::5"
    assert rules.address("App.Internal") == "app.internal"
    assert rules.address("::1").kind is rules.Kind.IPV6
    for bad in ["010.0.0.1", "10.0.0.1\n", "10.0.0.1 backup", "256.1.1.1", "[::1]", "::1]", "a..b", "-a.b",
                "app.internal#", "app_internal", "\u00e4.example.com", "\uff11\uff10.0.0.1"]:
        with pytest.raises(rules.Refused):
            rules.address(bad)


@pytest.mark.parametrize("separator", SEPARATORS)
def test_no_builder_argument_can_hold_a_separator(separator: str) -> None:
    attempts = [
        lambda: commands.set_server_addr(f"web{separator}x", "slot1", "10.0.0.1", 80),
        lambda: commands.set_server_addr("web", f"slot1{separator}", "10.0.0.1", 80),
        lambda: commands.set_server_addr("web", "slot1", f"10.0.0.1{separator}", 80),
        lambda: commands.set_server_addr("web", "slot1", f"::1{separator}x", 80),
        lambda: commands.set_server_weight(f"web{separator}", "slot1", 1),
        lambda: commands.add_map(f"/etc/haproxy/routes{separator}.map", "a.test", "web"),
        lambda: commands.add_map("/etc/haproxy/routes.map", f"a.test{separator}x", "web"),
        lambda: commands.set_map("/etc/haproxy/routes.map", "a.test", f"web{separator}x"),
        lambda: commands.del_map("/etc/haproxy/routes.map", f"a.test{separator}"),
        lambda: commands.show_servers_state(f"web{separator}"),
        lambda: commands.show_map(f"/m{separator}"),
    ]
    for attempt in attempts:
        with pytest.raises(ValueError):
            attempt()


def test_commands_are_one_command_of_the_grammar_or_nothing() -> None:
    assert commands.set_server_addr("web", "slot3", "::1", 8080) == "set server web/slot3 addr ::1 port 8080"
    assert commands.set_server_state("web", "slot3", commands.ServerState.MAINT) == "set server web/slot3 state maint"
    assert commands.add_map("/m", "*/api", "web") == "add map /m */api web"
    for text in ["set server web/slot1 weight 1; shutdown frontend http", "shutdown frontend http",
                 "set server web/slot1 weight 1\n", "show proc ", "set server web/slot1 addr app.internal port 80"]:
        with pytest.raises(commands.UnsafeCommand):
            commands.Command(text)
    with pytest.raises(commands.UnsafeCommand, match="not an IP address"):
        commands.set_server_addr("web", "slot1", "app.internal", 80)


def test_the_socket_sender_takes_only_built_commands(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="only Command"):
        haproxy.socket_command(tmp_path / "admin.sock", "show proc")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        haproxy.runtime_commands(tmp_path / "admin.sock", ["set server web/slot1 weight 1"])  # type: ignore[list-item]


def test_a_health_answer_holding_another_service_is_an_error_not_data() -> None:
    entry = {"Node": {"Node": "n1", "Address": "10.0.0.1"},
             "Service": {"ID": "x", "Service": "billing", "Address": "", "Port": 80}, "Checks": []}
    with pytest.raises(ForeignEntry, match="billing"):
        parse_health_entries("cabify", [entry])
    same_service_other_case = {**entry, "Service": {**entry["Service"], "Service": "Cabify"}}
    service, _ = parse_health_entries("cabify", [same_service_other_case])
    assert len(service.instances) == 1, "Consul's names are case-insensitive"


@pytest.fixture
def settings(tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[haproxy]\nuser = ""\ngroup = ""\nstats_socket = "{tmp_path}/s.sock"\n'
                   f'config_path = "{tmp_path}/haproxy.cfg"\nserver_state_file = "{tmp_path}/state"\n')
    return load_settings(cfg, env={})


def _render(settings, template: Path, instance_id: str = "web-1\n    server evil 1.2.3.4:80",
            node: str = "n1;x") -> str:
    entry = {"Node": {"Node": node, "Address": "10.0.0.1"},
             "Service": {"ID": instance_id, "Service": "cabify", "Address": "", "Port": 80}, "Checks": []}
    service, _ = parse_health_entries("cabify", [entry])
    return prepared_for(settings, service, template=load_template(template)).text


def test_a_custom_template_reaches_only_labels_of_consul_ids(tmp_path: Path, settings) -> None:
    template = tmp_path / "t.j2"
    template.write_text("{% for b in backends %}{% for s in b.servers %}{{ s.instance_id }} {{ s.node }}|"
                        "{% endfor %}{% endfor %}\n")
    text = _render(settings, template)
    first = text.split("|")[0]
    assert "\n" not in first and " server" not in first and ";" not in first
    assert all(rules.is_name(part) for part in first.split(" "))


@pytest.mark.parametrize("expression", ['"a\\nb"', '"x\\u2028y"', '"\\x00"', "backends", "True"])
def test_a_template_cannot_print_a_line_break_or_an_unchecked_object(tmp_path: Path, settings,
                                                                      expression: str) -> None:
    template = tmp_path / "t.j2"
    template.write_text(f"global\n  {{{{ {expression} }}}}\n")
    with pytest.raises(TemplateError, match=r"t\.j2:2: Refused: value printed by the template"):
        _render(settings, template)


def test_unicode_folding_never_passes_for_ascii() -> None:
    from haproxy_sync.catalog import Status

    assert Status.parse("passing") is Status.PASSING
    assert Status.parse("pass\u0131ng") is Status.CRITICAL, "a dotless i uppercases to I: exact words only"
    entry = {"Node": {"Node": "n1", "Address": "10.0.0.1"},
             "Service": {"ID": "x", "Service": "\u212aafka", "Address": "", "Port": 80}, "Checks": []}
    with pytest.raises(ForeignEntry):
        parse_health_entries("kafka", [entry])  # the Kelvin sign lowercases to k


def test_names_that_are_path_segments_of_consuls_urls_are_refused() -> None:
    for dots in (".", ".."):
        with pytest.raises(rules.Refused):
            rules.name(dots)
    assert rules.name("a.b") == "a.b"
