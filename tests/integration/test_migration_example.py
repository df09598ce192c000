"""The worked example of docs/migration.md: a typical consul-template HAProxy template
(docs/examples/consul-template/) and its haproxy-sync conversion (docs/examples/haproxy-sync/).

The converted template and config are used as shipped (only paths, the Consul address and the user are
pointed at this test's own): ``haproxy-sync check`` passes them, ``render --check`` renders them against
devconsul and real ``haproxy -c`` accepts the result. The real consul-template renders the original from
the same catalog, and both configs must route the same hosts and paths to the same backends, each with
the same servers at the same weights. A live run then shows what the conversion is for: the converted
template keeps the runtime path (a new instance and a new weight without a reload) and its routes reach
the right instances through HAProxy.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from bench.common.syncers import find_consul_template
from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from haproxy_sync.dev.workdir import Workdir
from tests.helpers import DaemonProcess, cli, consul_put, free_port, http_get, register, running_haproxy, wait_until

pytestmark = [
    pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed"),
    pytest.mark.timeout(900),  # the first go install of consul-template takes about a minute
]

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
ORIGINAL = EXAMPLES / "consul-template" / "haproxy.cfg.ctmpl"
CONVERTED = EXAMPLES / "haproxy-sync" / "haproxy.cfg.j2"
CONVERTED_CONFIG = EXAMPLES / "haproxy-sync" / "config.toml"

# (service, ID, address, port, passing weight): documentation addresses (TEST-NET), which pass
# haproxy-sync's address policy without a `sync.networks` of their own.
INSTANCES = [
    ("web", "web-1", "192.0.2.11", 8080, 1),
    ("web", "web-2", "192.0.2.12", 8080, 1),
    ("api", "api-1", "192.0.2.21", 9000, 3),
    ("api", "api-2", "192.0.2.22", 9000, 1),
    ("static", "static-1", "192.0.2.31", 8000, 1),
]


@dataclass(frozen=True)
class Routed:
    """What a config routes: the default backend, (host or *, path or "", backend) routes, and per
    backend the (address:port, weight) of each server that takes traffic."""

    default: str
    routes: frozenset[tuple[str, str, str]]
    servers: dict[str, frozenset[tuple[str, int]]]


_SERVER = re.compile(r"^\s+server\s+\S+\s+(\S+)(.*)$")
_WEIGHT = re.compile(r"\bweight\s+(\d+)")


def _backends(text: str) -> tuple[str, dict[str, frozenset[tuple[str, int]]]]:
    default, current = "", None
    servers: dict[str, set[tuple[str, int]]] = {}
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if not line[0].isspace():
            current = words[1] if words[0] == "backend" else None
            if current:
                servers[current] = set()
        elif words[0] == "default_backend":
            default = words[1]
        elif current and (match := _SERVER.match(line)):
            rest = match.group(2).split("#")[0]
            if " disabled" in f" {rest}":
                continue  # a free slot: in maintenance, no traffic
            weight = _WEIGHT.search(rest)
            servers[current].add((match.group(1), int(weight.group(1)) if weight else 1))
    return default, {name: frozenset(found) for name, found in servers.items()}


def routed_by_consul_template(text: str) -> Routed:
    """The example's own forms only: ``use_backend B if { hdr(host) -i H }`` and ``{ path_beg P }``."""
    routes = set()
    for line in text.splitlines():
        if not line.strip().startswith("use_backend"):
            continue
        if match := re.fullmatch(r"\s*use_backend (\S+) if \{ hdr\(host\) -i (\S+) \}", line):
            routes.add((match.group(2), "", match.group(1)))
        elif match := re.fullmatch(r"\s*use_backend (\S+) if \{ path_beg (\S+) \}", line):
            routes.add(("*", match.group(2), match.group(1)))
        else:
            raise AssertionError(f"a use_backend line this test cannot read: {line!r}")
    default, servers = _backends(text)
    return Routed(default, frozenset(routes), servers)


def routed_by_haproxy_sync(text: str, routes_map: str) -> Routed:
    """The map's ``host[/path] backend`` lines (``*`` for any host) and the config's backends."""
    routes = set()
    for line in routes_map.splitlines():
        if line.strip() and not line.startswith("#"):
            key, backend = line.split()
            host, slash, path = key.partition("/")
            routes.add((host, slash + path, backend))
    default, servers = _backends(text)
    return Routed(default, frozenset(routes), servers)


EXPECTED = Routed(
    default="web",
    routes=frozenset({("api.example.com", "", "api"), ("*", "/static", "static")}),
    servers={
        service: frozenset((f"{address}:{port}", weight) for name, _, address, port, weight in INSTANCES
                           if name == service)
        for service in ("web", "api", "static")
    },
)


def populate(consul: DevConsulThread) -> None:
    for service, instance_id, address, port, weight in INSTANCES:
        consul_put(consul.url, "/v1/agent/service/register", {
            "ID": instance_id, "Name": service, "Address": address, "Port": port,
            "Weights": {"Passing": weight, "Warning": 1},
        })


def converted_config(root: Path, consul_url: str, **haproxy_keys: Any) -> Path:
    """The example's config.toml as shipped, its paths, Consul address and user pointed at ``root``."""
    sections = tomllib.loads(CONVERTED_CONFIG.read_text())
    sections["consul"] = {**sections["consul"], "address": consul_url}
    del sections["consul"]["token_file"]
    sections["haproxy"] = {
        **sections["haproxy"], "binary": haproxy.find_binary("haproxy"), "template": str(CONVERTED),
        "config_path": str(root / "haproxy.cfg"), "master_socket": str(root / "master.sock"),
        "stats_socket": str(root / "admin.sock"), "server_state_file": str(root / "server-state"),
        "user": "", "group": "", "log_target": "stderr format short local0 notice", **haproxy_keys,
    }
    sections["metrics"] = {"listen": ""}
    path = root / "config.toml"
    path.write_text(tomli_w.dumps(sections))
    return path


def render_converted(tmp_path: Path, consul: DevConsulThread) -> tuple[str, str]:
    """``check``, then ``render --check --write`` into tmp_path: the config and map haproxy-sync writes."""
    root = tmp_path / "haproxy-sync"
    root.mkdir()
    config = converted_config(root, consul.url)
    checked = cli("check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    rendered = cli("render", "--check", "--write", "--config", str(config))
    assert rendered.returncode == 0, rendered.stderr
    text, routes = (root / "haproxy.cfg").read_text(), (root / "routes.map").read_text()
    haproxy.validate(haproxy.find_binary("haproxy"), root / "haproxy.cfg")  # real haproxy -c, the real map beside it
    return text, routes


def test_the_converted_example_renders_and_passes_haproxy_check(tmp_path: Path, consul: DevConsulThread) -> None:
    populate(consul)
    text, routes = render_converted(tmp_path, consul)
    assert routed_by_haproxy_sync(text, routes) == EXPECTED
    # What the runtime path needs: slot lines, free ones disabled, and the map looked up.
    assert re.search(r"^    server slot1 192\.0\.2\.2[12]:9000 check weight [13]  # api-", text, re.M), text
    assert re.search(r"^    server slot8 127\.0\.0\.1:1 check weight 0 disabled  # free$", text, re.M), text
    assert f"map_str({tmp_path / 'haproxy-sync' / 'routes.map'})" in text
    # What came over from the original.
    assert "option forwardfor" in text and "http-request set-header X-Forwarded-Proto http" in text
    assert "balance leastconn\n    option httpchk GET /healthz" in text and "maxconn 4000" in text


def consul_template_render(binary: Path, consul: DevConsulThread, root: Path) -> str:
    root.mkdir()
    config = root / "config.hcl"
    config.write_text(f'consul {{\n  address = "{consul.address}"\n}}\n')
    output = root / "haproxy.cfg"
    result = subprocess.run(
        [str(binary), "-once", "-config", str(config), "-log-level", "warn", "-template", f"{ORIGINAL}:{output}"],
        capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "HOME": str(root)},
    )
    assert result.returncode == 0, result.stderr
    return output.read_text()


def test_consul_template_and_haproxy_sync_route_the_same_services(tmp_path: Path, consul: DevConsulThread) -> None:
    binary, reason = find_consul_template(None, install=True)
    if binary is None:
        pytest.skip(f"consul-template cannot be installed: {reason}")
    populate(consul)
    original = consul_template_render(binary, consul, tmp_path / "consul-template")
    haproxy.validate(haproxy.find_binary("haproxy"), tmp_path / "consul-template" / "haproxy.cfg")
    text, routes = render_converted(tmp_path, consul)
    assert routed_by_consul_template(original) == routed_by_haproxy_sync(text, routes) == EXPECTED


def test_the_converted_example_keeps_the_runtime_path(tmp_path: Path, consul: DevConsulThread, make_apps) -> None:
    """Live: HAProxy runs the converted config, routes by host and path, and takes a new instance and a
    new weight through the Runtime API, with no reload."""
    web, api, static = make_apps(1, "web"), make_apps(1, "api"), make_apps(1, "static")
    for service, apps in (("web", web), ("api", api), ("static", static)):
        for app in apps:
            register(consul.url, app, service=service)
    config = converted_config(tmp_path, consul.url, http_bind=f"127.0.0.1:{free_port()}",
                              stats_bind=f"127.0.0.1:{free_port()}")
    sections = tomllib.loads(config.read_text())
    sections["sync"] = {**sections["sync"], "wait_min": "10ms", "wait_max": "200ms", "networks": ["127.0.0.0/8"]}
    config.write_text(tomli_w.dumps(sections))
    once = cli("run", "--once", "--config", str(config))
    assert once.returncode == 0, once.stderr
    url = f"http://{sections['haproxy']['http_bind']}"
    layout = Workdir(tmp_path, consul.url, 0, 0)  # where running_haproxy finds haproxy.cfg and the master socket
    with ExitStack() as exits:
        exits.enter_context(running_haproxy(layout))  # type: ignore[arg-type]
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        exits.callback(daemon.stop)
        daemon.wait_for_log("applied ", timeout=30)

        def answer(path: str = "/", host: str = "www.example.com") -> str:
            status, body = http_get(f"{url}{path}", headers={"Host": host})
            return body.strip() if status == 200 else f"HTTP {status}"

        wait_until(lambda: answer() == "web-1", 15, what="web-1 serving through HAProxy")
        assert answer(host="api.example.com") == "api-2"
        assert answer("/static/app.js") == "static-3"
        assert answer("/staticfoo") == "web-1", "whole path segments, unlike the original's path_beg"

        (second,) = make_apps(1, "web")
        register(consul.url, second, service="web")
        wait_until(lambda: {answer() for _ in range(6)} == {"web-1", "web-4"}, 15, what="web-4 in rotation")
        consul_put(consul.url, "/v1/agent/service/register", {
            "ID": api[0].instance_id, "Name": "api", "Address": "127.0.0.1", "Port": api[0].port,
            "Weights": {"Passing": 5, "Warning": 1},
            "Check": {"HTTP": f"http://127.0.0.1:{api[0].port}/health", "Interval": "200ms", "Timeout": "1s"}})
        wait_until(lambda: any(s.weight == 5 for s in haproxy.servers_state(tmp_path / "admin.sock", "api")), 15,
                   what="api's new weight in HAProxy")
        log = daemon.log()
        assert log.count("runtime API:") >= 2, log
        assert "reloaded" not in log.split("applied ", 1)[1], f"a reload after the first apply: {log}"

        # A re-read of a template that lost the map lookups is refused, the running one kept.
        mapless = tmp_path / "mapless.cfg.j2"
        mapless.write_text("\n".join(line for line in CONVERTED.read_text().splitlines() if "map_str(" not in line))
        sections["haproxy"]["template"] = str(mapless)
        config.write_text(tomli_w.dumps(sections))
        refusal = daemon.wait_for_log("new configuration rejected", timeout=15)
        assert f"{mapless}: does not render what haproxy-sync changes at runtime: no map converter" in refusal
        assert daemon.alive() and answer(host="api.example.com") == "api-2"


# What a conversion can forget that HAProxy accepts (docs/migration.md, "What a template must keep"):
# the template's edit, and what the refusal names.
FORGOTTEN = {
    "slot lines": (lambda t: t.replace("{% for server in backend.servers %}", "{% for server in [] %}"),
                   "backend web has no `server slot1` line"),
    "the map": (lambda t: "\n".join(line for line in t.splitlines() if "map_str(" not in line and "%[var" not in line),
                "no map converter loads the routes map"),
    "disabled": (lambda t: t.replace('{{ " disabled" if server.state == "disabled" else "" }}', ""),
                 "`server slot3` lacks `disabled`"),
}


@pytest.mark.parametrize("forgotten", sorted(FORGOTTEN))
def test_a_conversion_without_what_the_runtime_path_needs_is_refused_in_one_line(tmp_path: Path,
                                                                                   forgotten: str) -> None:
    edit, named = FORGOTTEN[forgotten]
    template = tmp_path / "forgetful.cfg.j2"
    template.write_text(edit(CONVERTED.read_text()))
    assert template.read_text() != CONVERTED.read_text()
    config = converted_config(tmp_path, "http://127.0.0.1:1", template=str(template))
    for command in (("check",), ("run",), ("run", "--once")):
        result = cli(*command, "--config", str(config))
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr == (f"haproxy-sync: {template}: does not render what haproxy-sync changes at runtime: "
                                 f"{result.stderr.split('runtime: ', 1)[-1]}"), (command, result.stderr)
        assert named in result.stderr and result.stderr.count("\n") == 1, (command, result.stderr)
