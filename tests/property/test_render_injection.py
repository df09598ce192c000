"""Nothing registered in Consul can add a line or a directive to haproxy.cfg."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from haproxy_sync import haproxy
from haproxy_sync.catalog import parse_health_entries
from haproxy_sync.config import load_settings
from haproxy_sync.render import load_template
from tests.helpers import prepared_for

NASTY = st.sampled_from(["\n", "\r", "#", '"', "'", " ", "\\", "\t", "{{", "}}", "\x00", "é", "ü", "\u2028"])
text = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(NASTY, st.text(max_size=5)), max_size=8).map("".join),
    st.just("a" * 10_000),
    st.sampled_from(["10.0.0.1", "::1", "2001:db8::5", "app.internal", "10.0.0.1\nserver x 1.2.3.4:80", "",
                     "app.internal\n", "10.0.0.1\n", "256.1.1.1"]),  # `$` let a trailing newline through
)
port = st.one_of(st.integers(-5, 70_000), st.text(max_size=5), st.none(), st.booleans())
entry = st.fixed_dictionaries({
    "Node": st.fixed_dictionaries({"Node": text, "Address": text}),
    "Service": st.fixed_dictionaries({
        "ID": text, "Address": text, "Port": port,
        "Tags": st.lists(text, max_size=3), "Meta": st.dictionaries(text, text, max_size=3),
        "Weights": st.fixed_dictionaries({"Passing": st.integers(-2, 400), "Warning": st.integers(-2, 400)}),
    }),
    "Checks": st.lists(st.fixed_dictionaries({"Status": st.sampled_from(["passing", "warning", "critical", "x"]),
                                              "Output": text}), max_size=3),
})
SERVER_LINE = re.compile(
    r"^    server slot\d+ (\[[0-9a-f:]+\]|[A-Za-z0-9.-]+):\d{1,5} check weight \d{1,3}"
    r"( guid srv:[A-Za-z0-9_.:-]{1,100}:slot\d+)?( disabled)?"
    r"  # [A-Za-z0-9_.:-]{1,100}$"
)


def _settings(tmp: Path):
    cfg = tmp / "c.toml"
    cfg.write_text(f'[haproxy]\nuser = ""\ngroup = ""\nstats_socket = "{tmp}/s.sock"\n'
                   f'config_path = "{tmp}/haproxy.cfg"\n'
                   f'server_state_file = "{tmp}/state"\n')
    return load_settings(cfg, env={})


TRAILING_NEWLINE = [{
    "Node": {"Node": "n1", "Address": "app.internal\n"},
    "Service": {"ID": "x-1", "Address": "", "Port": 80, "Tags": [], "Meta": {},
                "Weights": {"Passing": 1, "Warning": 1}},
    "Checks": [],
}]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(entry, max_size=6))
@example(entries=TRAILING_NEWLINE)
def test_arbitrary_catalog_renders_only_valid_server_lines(tmp_path: Path, entries: list[dict]) -> None:
    settings_ = _settings(tmp_path)
    template = load_template(settings_.template_path())
    service, skipped = parse_health_entries("cabify", entries)
    text = prepared_for(settings_, service, template=template).text
    baseline = prepared_for(settings_, template=template).text
    server_lines = [line for line in text.splitlines() if line.startswith("    server ")]
    assert len(server_lines) == max(8, 2 * len(service.instances)), "the base count, or room to double"
    assert sum(1 for line in server_lines if not line.endswith("# free")) == len(service.instances)
    assert len(service.instances) + len(skipped) == len(entries) - _duplicates(service, entries, skipped)
    for line in server_lines:
        assert SERVER_LINE.match(line), line
    other = [line for line in text.splitlines() if not line.startswith(("    server ", "# Consul"))]
    assert len(other) + len(server_lines) + 1 == len(text.splitlines())
    assert other == [line for line in baseline.splitlines() if not line.startswith(("    server ", "# Consul"))]


def _duplicates(service, entries, skipped) -> int:
    """Entries with the same (node, ID) collapse into one instance, as in Consul's own model."""
    valid = len(entries) - len(skipped)
    return valid - len(service.instances)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(entry, min_size=1, max_size=6))
def test_arbitrary_catalog_passes_haproxy_check(tmp_path: Path, entries: list[dict]) -> None:
    binary = haproxy.find_binary("haproxy")
    if binary is None:
        return
    settings_ = _settings(tmp_path)
    service, _ = parse_health_entries("cabify", entries)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(prepared_for(settings_, service).text)
    (tmp_path / "routes.map").write_text("")
    haproxy.validate(binary, cfg)
