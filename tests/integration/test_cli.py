"""The CLI as people type it, in real subprocesses against devconsul."""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import click
import pytest

from haproxy_sync import __version__, haproxy
from haproxy_sync.cli import main
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import DaemonProcess, Layout, all_passing, cli, free_port, register, wait_until

COMMANDS = ["run", "render", "check", "dev", "devconsul", "systemd-unit"]
needs_haproxy = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")


@pytest.fixture
def layout(tmp_path: Path, consul: DevConsulThread, make_apps) -> Layout:
    for app in make_apps(3):
        register(consul.url, app)
    wait_until(lambda: all_passing(consul.url, 3), 10, what="checks passing")
    layout = Layout(tmp_path, consul.url)
    layout.write()
    return layout


def test_version_shows_the_revision() -> None:
    result = cli("--version")
    described = subprocess.run(["git", "-C", str(Path(__file__).parents[2]), "describe", "--always", "--dirty",
                                "--abbrev=12", "--exclude", "*"], capture_output=True, text=True, check=False)
    assert described.returncode == 0, "the tests run from a git checkout"
    assert result.returncode == 0
    assert result.stdout == f"haproxy-sync {__version__} (revision {described.stdout.strip()})\n"


def test_render_write_goes_with_check_alone(layout: Layout) -> None:
    result = cli("render", "--write", "--config", str(layout.config_toml))
    assert result.returncode == 64 and "--write goes with --check alone" in result.stderr, result.stderr
    assert not layout.haproxy_cfg.exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_explaining_every_option(command: str) -> None:
    definition = main.commands[command]
    for param in definition.params:
        if isinstance(param, click.Option):
            assert param.help, f"{command} {param.opts[0]} has no help text"
    result = cli(command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"Usage: haproxy-sync {command} [OPTIONS]")
    for param in definition.params:
        assert param.opts[0] in result.stdout


def test_usage_error_exits_64_with_one_clear_line() -> None:
    result = cli("render", "--no-such-flag")
    assert result.returncode == 64
    assert "No such option '--no-such-flag'" in result.stderr


def test_render_dry_run_prints_config_and_touches_nothing(layout: Layout) -> None:
    result = cli("render", "--dry-run", "--config", str(layout.config_toml))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("  # cabify-") == 3
    assert not layout.haproxy_cfg.exists()


def test_render_flags_work_without_a_config_file(consul: DevConsulThread, make_apps, tmp_path: Path) -> None:
    (app,) = make_apps(1, prefix="api")
    register(consul.url, app, service="api")
    result = cli("render", "--dry-run", "--consul", consul.url, "--service", "api", "--output",
                 str(tmp_path / "x.cfg"),
                 env={"CONSUL_HTTP_ADDR": "127.0.0.1:1", "HAPROXY_SYNC_NETWORKS": "127.0.0.0/8"})
    assert result.returncode == 0, result.stderr
    assert "backend api" in result.stdout and "server slot1 127.0.0.1:" in result.stdout and "# api-1" in result.stdout


@needs_haproxy
def test_render_diff_exit_codes(layout: Layout) -> None:
    first = cli("render", "--diff", "--config", str(layout.config_toml))
    assert first.returncode == 2 and "+    server slot1 127.0.0.1:" in first.stdout
    assert not layout.haproxy_cfg.exists(), "--diff touches nothing"
    checked = cli("render", "--check", "--config", str(layout.config_toml))
    assert checked.returncode == 0 and "passed haproxy -c; nothing written" in checked.stderr, checked.stderr
    assert not layout.haproxy_cfg.exists() and not layout.routes_map.exists(), "--check alone writes nothing"
    written = cli("render", "--check", "--write", "--config", str(layout.config_toml))
    assert written.returncode == 0, written.stderr
    assert layout.haproxy_cfg.read_text().count("  # cabify-") == 3
    same = cli("render", "--diff", "--config", str(layout.config_toml))
    assert same.returncode == 0 and same.stdout == ""


def test_unreachable_consul_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = cli("render", "--dry-run", "--consul", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert result.stderr.startswith("haproxy-sync: Consul at http://127.0.0.1:")
    assert "(consul.address) refused the connection" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_debug_shows_a_traceback(tmp_path: Path) -> None:
    result = cli("render", "--dry-run", "--debug", "--consul", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_bad_config_reports_every_problem_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[consul]\nwait = "x"\n[haproxy]\nmaxconn = -1\n')
    result = cli("check", "--config", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"haproxy-sync: config: {path}: ") for line in lines)


@needs_haproxy
def test_check_validates_config_and_template_offline(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[consul]\naddress = "127.0.0.1:1"\n[haproxy]\nuser = ""\ngroup = ""\n')
    ok = cli("check", "--config", str(path))
    assert ok.returncode == 0 and "passed haproxy -c" in ok.stdout, ok.stderr
    template = tmp_path / "bad.j2"
    template.write_text("global\n    bogus-directive 1\n{% for b in backends %}backend {{ b.name }}\n{% endfor %}")
    bad = cli("check", "--config", str(path), "--template", str(template))
    assert bad.returncode == 1 and "haproxy -c rejected" in bad.stderr and "bogus-directive" in bad.stderr


@needs_haproxy
def test_run_once_writes_and_exits_zero(layout: Layout) -> None:
    result = cli("run", "--once", "--config", str(layout.config_toml))
    assert result.returncode == 0, result.stderr
    assert "HAProxy not running, it will load this file when it starts" in result.stderr
    assert layout.haproxy_cfg.read_text().count("  # cabify-") == 3


def test_systemd_unit_prints_the_unit() -> None:
    result = cli("systemd-unit", "--user", "hs", "--exec-path", "/opt/x/bin/haproxy-sync")
    assert result.returncode == 0
    assert "Type=notify" in result.stdout and "User=hs" in result.stdout
    assert "ExecStart=/opt/x/bin/haproxy-sync run --config /etc/haproxy-sync/config.toml" in result.stdout


@needs_haproxy
def test_render_plan_says_runtime_or_reload_and_touches_nothing(layout: Layout, consul: DevConsulThread,
                                                               make_apps) -> None:
    assert cli("render", "--config", str(layout.config_toml)).returncode == 0
    before = layout.haproxy_cfg.read_text()
    same = cli("render", "--plan", "--config", str(layout.config_toml))
    assert same.returncode == 0 and same.stdout.strip() == "no change", same.stdout + same.stderr
    for app in make_apps(2, prefix="new"):
        register(consul.url, app)
    from tests.helpers import consul_put
    consul_put(consul.url, "/v1/agent/service/deregister/cabify-1")
    wait_until(lambda: all_passing(consul.url, 4), 10, what="checks passing")
    runtime = cli("render", "--plan", "--config", str(layout.config_toml))
    assert runtime.stdout.splitlines() == ["runtime: 7 commands, no reload", "  cabify: +2 -1"], runtime.stdout
    for app in make_apps(6, prefix="more"):
        register(consul.url, app)
    grown = cli("render", "--plan", "--config", str(layout.config_toml))
    lines = grown.stdout.splitlines()
    assert lines[0].startswith("runtime: ") and lines[0].endswith(" commands, no reload"), grown.stdout
    assert "  cabify: slots 8 -> 16" in lines, "growth is add server, and the plan says so"
    assert layout.haproxy_cfg.read_text() == before


def test_check_refuses_what_run_would_refuse(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[haproxy]\nbinary = "{tmp_path}/no-haproxy"\nuser = ""\ngroup = ""\n'
                    f'config_path = "{tmp_path}/haproxy.cfg"\nserver_state_file = "{tmp_path}/state"\n')
    missing = cli("check", "--config", str(path))
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1, missing.stdout + missing.stderr
    assert f"haproxy binary '{tmp_path}/no-haproxy' not found (looked on PATH" in missing.stderr
    spaced = tmp_path / "with space"
    path.write_text(f'[haproxy]\nroutes_map = "{spaced}/routes.map"\nstats_socket = "/run/a#b.sock"\n')
    refused = cli("check", "--config", str(path))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 2, refused.stderr
    assert f"{path}: haproxy.routes_map: '{spaced}/routes.map'" in lines[0], lines
    assert f"{path}: haproxy.stats_socket: '/run/a#b.sock'" in lines[1], lines
    assert all("is not an absolute path of A-Z a-z 0-9 . _ / + -" in line for line in lines), lines


@needs_haproxy
def test_check_finds_haproxy_where_run_finds_it(tmp_path: Path) -> None:
    binary = haproxy.find_binary("haproxy")
    path = tmp_path / "c.toml"
    path.write_text(f'[haproxy]\nbinary = "{Path(binary).name}"\nuser = ""\ngroup = ""\n'
                    f'config_path = "{tmp_path}/haproxy.cfg"\nserver_state_file = "{tmp_path}/state"\n')
    # A PATH without sbin, as a normal user's on Debian: both look in /usr/sbin and /usr/local/sbin next.
    if Path(binary).parent.as_posix() not in ("/usr/sbin", "/usr/local/sbin"):
        pytest.skip(f"the HAProxy under test ({binary}) is not in an sbin directory")
    ok = cli("check", "--config", str(path), env={"PATH": "/usr/bin:/bin"})
    assert ok.returncode == 0 and f"passed haproxy -c ({binary}" in ok.stdout, ok.stderr


def unix_put(path: Path, url_path: str, body: dict) -> int:
    """A PUT to an HTTP server on a unix socket (urllib speaks TCP only)."""
    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(str(path))

    connection = Connection("localhost", timeout=5)
    try:
        connection.request("PUT", url_path, json.dumps(body))
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_a_unix_socket_consul_address_works(tmp_path: Path) -> None:
    """CONSUL_HTTP_ADDR=unix:///path, as an agent with addresses.http = "unix://..." serves it."""
    path = tmp_path / "consul.sock"
    consul = DevConsulThread(unix_socket=str(path)).start()
    try:
        assert consul.url == f"unix://{path}"
        assert unix_put(path, "/v1/agent/service/register",
                        {"Name": "api", "ID": "api-1", "Address": "127.0.0.1", "Port": 9999}) == 200
        env = {"CONSUL_HTTP_ADDR": f"unix://{path}", "HAPROXY_SYNC_NETWORKS": "127.0.0.0/8"}
        result = cli("render", "--dry-run", "--service", "api", "--output", str(tmp_path / "x.cfg"), env=env)
        assert result.returncode == 0, result.stderr
        assert "server slot1 127.0.0.1:9999" in result.stdout and "# api-1" in result.stdout
    finally:
        consul.stop()
    gone = cli("render", "--dry-run", "--service", "api", "--output", str(tmp_path / "x.cfg"), env=env)
    assert gone.returncode == 1 and gone.stderr.count("\n") == 1, gone.stderr
    assert gone.stderr == f"haproxy-sync: Consul at unix://{path} (consul.address) cannot be reached: no such socket\n"


@pytest.mark.parametrize(("name", "param", "setting"), [
    ("CONSUL_NAMESPACE", "ns", "Namespaces"), ("CONSUL_PARTITION", "partition", "Partitions"),
])
def test_consul_ce_refuses_a_namespace_or_partition_and_the_line_says_what_to_unset(
        consul: DevConsulThread, name: str, param: str, setting: str) -> None:
    """Sent as ns= / partition=, as Consul's client does; Consul CE answers 400 to any, "default" too
    (agent/http_ce.go), and devconsul does the same."""
    result = cli("render", "--dry-run", "--consul", consul.url, env={name: "default"})
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert f'Consul at {consul.url} (consul.address) answered 400 Bad request: Invalid query parameter: "{param}" ' \
           f"- {setting} are a Consul Enterprise feature" in result.stderr
    assert "unset consul.namespace (CONSUL_NAMESPACE) and consul.partition (CONSUL_PARTITION)" in result.stderr


class _BasicAuthProxy(http.server.ThreadingHTTPServer):
    """A reverse proxy in front of Consul that wants HTTP basic auth, as CONSUL_HTTP_AUTH is for."""

    def __init__(self, upstream: str, credentials: str) -> None:
        expected = "Basic " + base64.b64encode(credentials.encode()).decode()
        seen: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.headers.get("Authorization", ""))
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                with urllib.request.urlopen(upstream + self.path, timeout=5) as answer:
                    body = answer.read()
                    self.send_response(answer.status)
                    for key in ("Content-Type", "X-Consul-Index", "X-Consul-Knownleader", "X-Consul-Lastcontact"):
                        if answer.headers.get(key):
                            self.send_header(key, answer.headers[key])
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.seen = seen


def test_consul_http_auth_sends_basic_auth(consul: DevConsulThread, make_apps, tmp_path: Path) -> None:
    (app,) = make_apps(1, prefix="api")
    register(consul.url, app, service="api")
    proxy = _BasicAuthProxy(consul.url, "edge:s3cret:x")
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        address = f"http://127.0.0.1:{proxy.server_address[1]}"
        args = ("render", "--dry-run", "--consul", address, "--service", "api", "--output", str(tmp_path / "x.cfg"))
        env = {"HAPROXY_SYNC_NETWORKS": "127.0.0.0/8"}
        refused = cli(*args, env=env)
        assert refused.returncode == 1 and "answered 401" in refused.stderr, refused.stderr
        result = cli(*args, env={**env, "CONSUL_HTTP_AUTH": "edge:s3cret:x"})
        assert result.returncode == 0, result.stderr
        assert f"server slot1 127.0.0.1:{app.port}" in result.stdout
        assert proxy.seen[-1] == "Basic " + base64.b64encode(b"edge:s3cret:x").decode()
        assert "s3cret" not in result.stderr + refused.stderr
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_a_daemon_without_consul_names_consul_and_the_setting(tmp_path: Path) -> None:
    """The retry line names Consul, its address, consul.address and when it tries again."""
    with socket.socket() as holder:  # bound, not listening: the port refuses, and nobody else takes it
        holder.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{holder.getsockname()[1]}"
        layout = Layout(tmp_path, address)
        layout.write()
        daemon = DaemonProcess(layout.config_toml, tmp_path / "daemon.log")
        try:
            log = daemon.wait_for_log("retrying in", timeout=15)
        finally:
            daemon.stop()
    line = next(x for x in log.splitlines() if "failing fault=unreachable" in x)
    assert f"Consul at {address} (consul.address) refused the connection; keeping last good data, retrying in " in line


@needs_haproxy
def test_a_missing_master_socket_is_one_line_naming_the_setting_and_how_to_start_haproxy(
        layout: Layout) -> None:
    """No HAProxy runs: every retry of the reload finds no master socket; one error line says so for the
    whole episode (the retries are debug), naming haproxy.master_socket and HAProxy's -W -S."""
    daemon = DaemonProcess(layout.config_toml, layout.root / "daemon.log")
    try:
        daemon.wait_for_log("apply failed", timeout=15)
        time.sleep(5)  # backoff_max 2s: a few retries
        log = daemon.log()
    finally:
        daemon.stop()
    assert log.count("apply failed") == 1, log
    line = next(x for x in log.splitlines() if "apply failed" in x)
    assert f"HAProxy socket {layout.master_socket} does not exist" in line and "(haproxy.master_socket)" in line
    assert f"haproxy -W -S {layout.master_socket} -f <config>" in line, line
