from __future__ import annotations

import re
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.catalog import parse_health_entries
from haproxy_sync.config import load_settings
from haproxy_sync.render import TemplateError, contract_problem, load_template
from tests.helpers import prepared_for


def entries(n: int, **over: object) -> list[dict]:
    return [
        {"Node": {"Node": "n1", "Address": "10.0.0.1"},
         "Service": {"ID": f"cabify-{i}", "Address": "", "Port": 9000 + i, **over},
         "Checks": [{"Status": "passing"}]}
        for i in range(n)
    ]


@pytest.fixture
def settings(tmp_path: Path):
    path = tmp_path / "config.toml"
    path.write_text(f'[haproxy]\nstats_socket = "{tmp_path}/admin.sock"\nuser = ""\ngroup = ""\n'
                    f'config_path = "{tmp_path}/haproxy.cfg"\n'
                    f'server_state_file = "{tmp_path}/state"\nhttp_bind = "127.0.0.1:8080"\n')
    return load_settings(path, env={})


def render(settings, raw: list[dict], template=None) -> str:
    """The text a first start renders for these health entries of cabify."""
    return prepared_for(settings, parse_health_entries("cabify", raw)[0], template=template).text


def test_same_snapshot_same_bytes_whatever_the_order(settings) -> None:
    template = load_template(settings.template_path())
    raw = entries(5)
    first = render(settings, raw, template)
    again = render(settings, list(reversed(raw)), template)
    assert first == again
    assert first.count("\n    server slot") == 10, "5 instances, room for twice as many"
    assert first.count("  # cabify-") == 5


def test_default_template_is_production_shaped_and_valid(settings, tmp_path: Path) -> None:
    raw = entries(3)
    raw[1]["Checks"] = [{"Status": "critical"}]
    raw[2]["Service"]["Weights"] = {"Passing": 5, "Warning": 0}
    raw[2]["Checks"] = [{"Status": "warning"}]
    text = render(settings, raw)
    for directive in ("master-worker", f"stats socket {tmp_path}/admin.sock mode 660 level admin",
                      f"server-state-file {tmp_path}/state", "option httplog", "option redispatch",
                      "option idle-close-on-response", "load-server-state-from-file global", "hard-stop-after 30000ms",
                      "option httpchk GET /health", "prometheus-exporter", "bind 127.0.0.1:8404",
                      "default_backend cabify"):
        assert directive in text, directive
    assert re.search(r"server slot1 10\.0\.0\.1:9000 check weight 1  # cabify-0$", text, re.M)
    assert re.search(r"server slot2 10\.0\.0\.1:9001 check weight 0 disabled  # cabify-1$", text, re.M)
    assert re.search(r"server slot3 10\.0\.0\.1:9002 check weight 0  # cabify-2$", text, re.M)
    assert re.search(r"server slot4 127\.0\.0\.1:1 check weight 0 disabled  # free$", text, re.M)
    binary = haproxy.find_binary("haproxy")
    if binary:
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(text)
        (tmp_path / "routes.map").write_text("")  # the routes map the frontend names
        haproxy.validate(binary, cfg)


def test_ipv6_addresses_are_bracketed(settings) -> None:
    template = load_template(settings.template_path())
    text = render(settings, entries(1, Address="2001:db8::1"), template)
    assert "server slot1 [2001:db8::1]:9000 check" in text


def test_undefined_variable_names_file_and_line(settings, tmp_path: Path) -> None:
    path = tmp_path / "t.j2"
    path.write_text("global\n  maxconn 1\n{{ backends[0].nmae }}\n")
    with pytest.raises(TemplateError, match=rf"^{re.escape(str(path))}:3: UndefinedError"):
        render(settings, entries(1), load_template(path))


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "t.j2"
    path.write_text("global\n{% for x in %}\n")
    with pytest.raises(TemplateError, match=rf"^{re.escape(str(path))}:2: syntax error"):
        load_template(path)


def test_missing_template_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="template not found"):
        load_template(tmp_path / "absent.j2")


def test_a_raising_expression_names_file_and_line(settings, tmp_path: Path) -> None:
    path = tmp_path / "t.j2"
    path.write_text("a\nb\n{{ 1 // 0 }}\n")
    with pytest.raises(TemplateError, match=rf"{re.escape(str(path))}:3: ZeroDivisionError"):
        render(settings, entries(1), load_template(path))


def test_the_contract_check_names_what_the_runtime_path_lacks(settings) -> None:
    """The built-in template renders all of it; each edit takes one piece away (docs/migration.md)."""
    raw = [*entries(1), *entries(2)[1:]]
    raw[1]["Service"]["Weights"] = {"Passing": 7, "Warning": 1}
    prepared = prepared_for(settings, parse_health_entries("cabify", raw)[0])
    routes_map = str(settings.haproxy.routes_map_path)

    def problem(text: str) -> str | None:
        return contract_problem(text, prepared.tables, routes_map)

    text = prepared.text
    assert problem(text) is None
    assert problem(text.replace("backend cabify", "backend other")) == (
        "no `backend cabify` section (render one for each of `backends`)")
    assert "has no `server slot2` line" in (problem(text.replace("server slot2 ", "server x2 ")) or "")
    assert problem(text.replace("weight 7", "weight 1")) == (
        "backend cabify: `server slot2` lacks `weight {{ server.weight }}`")
    in_rotation = problem(text.replace("weight 7", "weight 7 disabled")) or ""
    assert "`server slot2` is `disabled` while in rotation" in in_rotation
    assert "`server slot3` lacks `disabled`" in (problem(text.replace(" disabled", "")) or "")
    commented = "\n".join(f"# {line}" if "map_str(" in line else line for line in text.splitlines())
    assert problem(commented) == f"no map converter loads the routes map {routes_map} (`map_str({{{{ routes_map }}}})`)"
