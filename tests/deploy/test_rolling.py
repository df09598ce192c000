"""site.yml rolls by default: the plays that restart servers and edges change one host at a time and
stop at the first failure, each waits for its host to be back (the wait tasks run here against fake
Consul, Nomad and haproxy-sync APIs that answer late, or never), and a Nomad client is drained first."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ANSIBLE_DIR, run, tail, tool

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

SITE = ANSIBLE_DIR / "site.yml"
ROLLING = {  # play hosts -> serial
    "consul_servers": 1, "all:!consul_servers": "34%", "nomad_clients": 1, "nomad_servers": 1,
    "nomad_clients:!nomad_servers": 1, "edge": 1, "keepalived": 1,
}


def _plays() -> dict[str, dict[str, Any]]:
    return {play["hosts"]: play for play in yaml.safe_load(SITE.read_text())}


def _steps(tasks: list[dict[str, Any]]) -> list[str]:
    """Each task as what it does: ``flush`` or ``role:tasks_from``."""
    found = []
    for task in tasks:
        if task.get("ansible.builtin.meta") == "flush_handlers":
            found.append("flush")
        elif "ansible.builtin.include_role" in task:
            include = task["ansible.builtin.include_role"]
            found.append(f"{include['name']}:{include['tasks_from']}")
    return found


def test_the_plays_that_restart_hosts_change_one_at_a_time_and_stop_at_a_failure() -> None:
    plays = _plays()
    for hosts, serial in ROLLING.items():
        play = plays[hosts]
        assert (play.get("serial"), play.get("max_fail_percentage"), play.get("order")) == (serial, 0, "sorted"), hosts


def test_each_server_and_edge_is_back_before_the_next() -> None:
    plays = _plays()
    for hosts, role in (("consul_servers", "consul"), ("nomad_servers", "nomad")):
        assert _steps(plays[hosts]["post_tasks"]) == ["flush", f"{role}:wait_server"], hosts
    edge = plays["edge"]
    assert _steps(edge["pre_tasks"]) == ["keepalived:step_aside"]
    assert _steps(edge["post_tasks"]) == ["flush", "haproxy_sync:wait_ready", "keepalived:step_back"]


def test_a_nomad_client_is_drained_before_its_restart_and_made_eligible_after() -> None:
    handlers = yaml.safe_load((ANSIBLE_DIR / "roles/nomad/handlers/main.yml").read_text())
    topic = [h for h in handlers if h["name"] == "Restart Nomad." or h.get("listen") == "Restart Nomad."]
    commands = [h.get("ansible.builtin.command", {}).get("argv", ["restart"])[:4] for h in topic]
    assert commands == [["nomad", "node", "drain", "-self"], ["restart"], ["nomad", "node", "drain", "-self"]]
    assert "-enable" in topic[0]["ansible.builtin.command"]["argv"]
    assert "-disable" in topic[2]["ansible.builtin.command"]["argv"]
    assert "groups[nomad_clients_group] | default([]) | length > 1" in topic[0]["when"], "a lone client keeps its work"


def rolling_order(ansible_env: dict[str, str], inventory: Path) -> list[tuple[str, list[list[str]]]]:
    """Per play of site.yml, its serial batches in order, from `--list-hosts` and the plays' serial/order."""
    proc = run([tool("ansible-playbook"), "-i", str(inventory), "site.yml", "--list-hosts"], timeout=120,
               cwd=ANSIBLE_DIR, env=ansible_env)
    assert proc.returncode == 0, tail(proc)
    listed = re.findall(r"play #\d+ \((.*?)\): [^\n]*\n\s+pattern: [^\n]*\n\s+hosts \(\d+\):\n((?:\s{6}\S+\n)+)",
                        proc.stdout)
    plays = list(yaml.safe_load(SITE.read_text()))
    order = []
    for (pattern, block), play in zip(listed, plays, strict=True):
        assert pattern == play["hosts"]
        hosts = sorted(block.split()) if play.get("order") == "sorted" else block.split()
        serial = play.get("serial")
        size = len(hosts) if serial is None else (
            serial if isinstance(serial, int) else max(1, int(len(hosts) * int(serial.rstrip("%")) / 100)))
        order.append((pattern, [hosts[i:i + size] for i in range(0, len(hosts), size)]))
    return order


def test_three_servers_and_two_edges_change_in_this_order(ansible_env: dict[str, str]) -> None:
    order = dict(rolling_order(ansible_env, ANSIBLE_DIR / "inventories" / "cluster.example"))
    assert order["consul_servers"] == [["server-1"], ["server-2"], ["server-3"]]
    assert order["nomad_servers"] == [["server-1"], ["server-2"], ["server-3"]]
    assert order["nomad_clients:!nomad_servers"] == [["client-1"], ["client-2"], ["client-3"]]
    assert order["edge"] == [["edge-1"], ["edge-2"]] and order["keepalived"] == [["edge-1"], ["edge-2"]]
    assert order["all:!consul_servers"] == [["client-1", "client-2"], ["client-3", "edge-1"], ["edge-2", "ops-1"]]


# --- the wait tasks against fakes ---


class Fake:
    """An HTTP API on 127.0.0.1 whose answer to each path is a function of how often it was asked."""

    def __init__(self, answers: dict[str, Callable[[int], tuple[int, Any]]]) -> None:
        self.asked: dict[str, int] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                count = fake.asked[path] = fake.asked.get(path, 0) + 1
                status, body = answers[path](count) if path in answers else (404, "no such path")
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[Callable[..., Fake]]:
    made: list[Fake] = []

    def make(answers: dict[str, Callable[[int], tuple[int, Any]]]) -> Fake:
        made.append(Fake(answers))
        return made[-1]

    yield make
    for one in made:
        one.close()


def _wait(ansible_env: dict[str, str], tmp_path: Path, role: str, entry: str, variables: dict[str, Any]
          ) -> Any:
    playbook = tmp_path / "wait.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Run one wait task file against a fake.", "hosts": "localhost", "connection": "local",
        "gather_facts": False, "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}", **variables},
        "tasks": [{"name": "Wait.", "ansible.builtin.include_role": {"name": role, "tasks_from": entry}}],
    }]))
    return run([tool("ansible-playbook"), "-i", "localhost,", str(playbook)], timeout=120, cwd=tmp_path,
               env=ansible_env)


def _late(after: int, early: Any, late: Any) -> Callable[[int], tuple[int, Any]]:
    return lambda count: (200, late if count > after else early)


def test_consul_wait_holds_until_a_leader_and_this_voter_are_back(ansible_env, tmp_path, fake) -> None:
    raft = {"Servers": [{"Node": "server-1", "Voter": True}, {"Node": "server-2", "Voter": False}]}
    back = {"Servers": [{"Node": "server-1", "Voter": True}, {"Node": "server-2", "Voter": True}]}
    api = fake({"/v1/status/leader": _late(2, "", "10.0.0.11:8300"),
                "/v1/operator/raft/configuration": _late(2, raft, back)})
    variables = {"consul_http_addr": api.url, "consul_node_name": "server-2", "consul_rejoin_retries": 10,
                 "consul_rejoin_delay": 0}
    proc = _wait(ansible_env, tmp_path, "consul", "wait_server", variables)
    assert proc.returncode == 0, tail(proc)
    assert api.asked == {"/v1/status/leader": 3, "/v1/operator/raft/configuration": 3}
    stuck = fake({"/v1/status/leader": _late(0, "", "10.0.0.11:8300"),
                  "/v1/operator/raft/configuration": _late(0, raft, raft)})
    proc = _wait(ansible_env, tmp_path, "consul", "wait_server", {**variables, "consul_http_addr": stuck.url,
                                                                 "consul_rejoin_retries": 3})
    assert proc.returncode == 2 and "FAILED - RETRYING" in proc.stdout, tail(proc)
    assert stuck.asked["/v1/operator/raft/configuration"] == 4, "bounded: the first try and 3 retries"


def test_nomad_wait_holds_until_this_server_is_alive(ansible_env, tmp_path, fake) -> None:
    members = {"Members": [{"Name": "server-2.global", "Status": "left"}]}
    alive = {"Members": [{"Name": "server-2.global", "Status": "alive"}]}
    api = fake({"/v1/status/leader": _late(0, "", "10.0.0.11:4647"), "/v1/agent/members": _late(1, members, alive)})
    proc = _wait(ansible_env, tmp_path, "nomad", "wait_server",
                 {"nomad_http_addr": api.url, "nomad_node_name": "server-2", "nomad_rejoin_retries": 5,
                  "nomad_rejoin_delay": 0})
    assert proc.returncode == 0, tail(proc)
    assert api.asked["/v1/agent/members"] == 2


def test_edge_wait_holds_until_haproxy_sync_is_ready(ansible_env, tmp_path, fake) -> None:
    api = fake({"/ready": lambda count: (200, {"ready": True}) if count > 2 else (503, {"ready": False}),
                "/stats": lambda count: (200, "stats")})
    address = api.url.removeprefix("http://")
    proc = _wait(ansible_env, tmp_path, "haproxy_sync", "wait_ready",
                 {"haproxy_sync_metrics_listen": address, "haproxy_sync_haproxy_stats_bind": address,
                  "haproxy_sync_ready_retries": 5, "haproxy_sync_ready_delay": 0})
    assert proc.returncode == 0, tail(proc)
    assert api.asked == {"/ready": 3, "/stats": 1}
