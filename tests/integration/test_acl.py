"""The daemon never mistakes an ACL-filtered answer for an empty service (issue #15, point 2).

Real Consul does not refuse a read a token may not fully see: it answers 200 with the part it may see
(``[]``), and says so in ``X-Consul-Results-Filtered-By-ACLs`` only when a token was sent. devconsul
follows that (tests/integration/test_devconsul_acl.py). Here the daemon runs against it with each
token an operator can get wrong: the right one, none, an unknown one, one without node:read, one
without service:read. A filtered read is an ``acl`` fault that keeps the last good servers; a token
that cannot be right is said in one line at start.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from haproxy_sync.dev.devconsul.acl import AclConfig, AclToken, parse_rules
from tests.helpers import App, DaemonProcess, Layout, cli, running_haproxy, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")

ROOT = "root-secret-0001"
TOKENS = {
    "right": ("service_prefix:read,node_prefix:read", "right-secret-0002"),
    "no-node-read": ("service_prefix:read", "no-node-secret-0003"),
    "no-service-read": ("node_prefix:read", "no-service-secret-0004"),
}


@dataclass
class Edge:
    consul: DevConsulThread
    apps: list[App]
    layout: Layout
    tmp_path: Path

    def daemon_with(self, secret: str | None, exits: ExitStack) -> DaemonProcess:
        """The daemon with this token in consul.token_file (none: no token at all)."""
        text = self.layout.config_toml.read_text().split("\n[consul]\n", 1)
        token_line = ""
        if secret is not None:
            token_file = self.tmp_path / "token"
            token_file.write_text(secret + "\n")
            token_file.chmod(0o600)
            token_line = f'token_file = "{token_file}"\n'
        self.layout.config_toml.write_text(f"{text[0]}\n[consul]\n{token_line}{text[1]}")
        daemon = DaemonProcess(self.layout.config_toml, self.tmp_path / "daemon.log")
        exits.callback(daemon.stop)
        return daemon

    def serving(self) -> set[int]:
        return self.layout.serving_ports()


def put(consul: DevConsulThread, path: str, body: dict) -> None:
    request = urllib.request.Request(f"{consul.url}{path}", method="PUT", data=json.dumps(body).encode(),
                                     headers={"X-Consul-Token": ROOT})
    urllib.request.urlopen(request, timeout=5).close()


@pytest.fixture
def edge(tmp_path: Path, make_apps) -> Iterator[tuple[Edge, ExitStack]]:
    tokens = (AclToken("root", ROOT, management=True),
              *(AclToken(name, secret, parse_rules(rules)) for name, (rules, secret) in TOKENS.items()))
    with DevConsulThread(port=0, acl=AclConfig(default_policy="deny", tokens=tokens)) as consul, \
            ExitStack() as exits:
        apps = make_apps(2)
        for app in apps:
            put(consul, "/v1/agent/service/register", {
                "ID": app.instance_id, "Name": "cabify", "Address": "127.0.0.1", "Port": app.port,
                "Check": {"HTTP": f"http://127.0.0.1:{app.port}/health", "Interval": "200ms", "Status": "passing"}})
        layout = Layout(tmp_path / "edge", consul.url)
        layout.root.mkdir()
        layout.write()
        edge = Edge(consul, apps, layout, tmp_path)
        # A first config with the right token, and HAProxy serving both instances: the last good data.
        right = tmp_path / "right-token"
        right.write_text(TOKENS["right"][1] + "\n")
        right.chmod(0o600)
        once = cli("run", "--once", "--config", str(layout.config_toml), env={"CONSUL_HTTP_TOKEN": TOKENS["right"][1]})
        assert once.returncode == 0, once.stderr
        exits.enter_context(running_haproxy(layout))
        wait_until(lambda: edge.serving() == {a.port for a in apps}, 15, what="both instances served")
        yield edge, exits


def test_the_right_token_is_named_at_start_and_serves(edge: tuple[Edge, ExitStack]) -> None:
    stack, exits = edge
    daemon = stack.daemon_with(TOKENS["right"][1], exits)
    log = daemon.wait_for_log("consul: ACL token ", timeout=15)
    assert "right-policy" in log and "acl fault" in log
    daemon.wait_for_log("applied ", timeout=15)
    assert stack.serving() == {a.port for a in stack.apps}
    assert "fault=acl" not in daemon.log() and "lists no instances" not in daemon.log()


@pytest.mark.parametrize("name", ["no-node-read", "no-service-read"])
def test_a_token_that_sees_part_of_the_answer_is_an_acl_fault_not_an_empty_backend(
    edge: tuple[Edge, ExitStack], name: str
) -> None:
    stack, exits = edge
    daemon = stack.daemon_with(TOKENS[name][1], exits)
    log = daemon.wait_for_log("failing fault=acl", timeout=15)
    line = next(x for x in log.splitlines() if "service=cabify failing fault=acl" in x)
    assert "X-Consul-Results-Filtered-By-ACLs" in line and "service:read" in line and "node:read" in line, line
    assert "consul.token" in line, "the line names the setting to fix"
    time.sleep(1.5)  # retries' worth: nothing is applied from a filtered answer
    assert stack.serving() == {a.port for a in stack.apps}, "the last good servers stay"
    assert all(f":{a.port} " in stack.layout.haproxy_cfg.read_text() for a in stack.apps)
    assert daemon.alive() and "Traceback" not in daemon.log()


def test_an_unknown_token_is_said_at_start_and_every_read_is_an_acl_fault(edge: tuple[Edge, ExitStack]) -> None:
    stack, exits = edge
    daemon = stack.daemon_with("not-a-token-anyone-made", exits)
    log = daemon.wait_for_log("Consul does not know the ACL token", timeout=15)
    assert "consul.token" in log and "not-a-token-anyone-made" not in log, "named by setting, never by secret"
    daemon.wait_for_log("failing fault=acl", timeout=15)
    time.sleep(1)
    assert stack.serving() == {a.port for a in stack.apps}


def test_no_token_with_acls_on_is_said_and_an_empty_first_answer_is_never_silent(
    edge: tuple[Edge, ExitStack]
) -> None:
    stack, exits = edge
    daemon = stack.daemon_with(None, exits)
    log = daemon.wait_for_log("no ACL token is set and Consul has ACLs on", timeout=15)
    assert "anonymous token" in log and "service:read and node:read" in log
    log = daemon.wait_for_log("service=cabify: the first answer lists no instances", timeout=15)
    assert "hidden by ACLs" in log and "set consul.token" in log
