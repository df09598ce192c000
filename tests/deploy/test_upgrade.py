"""Upgrade and rollback with the haproxy_sync role, converged on this machine (services off, every path
in a temporary root): release A, A again (nothing changes), B beside it (the link moves, one restart),
then A again (a rollback: no reinstall, the link moves back, one restart). Between the converges a real
HAProxy runs, and the daemon runs from the `current` link against devconsul: each restart the switch
asks for is done as the unit would (stop, start the link's binary), and HAProxy's worker stays."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from haproxy_sync import haproxy, master
from haproxy_sync.dev.process import HAProxyProcess
from tests.helpers import App, devconsul, free_port, http_get, register, wait_until

from .conftest import REPO, run, tail
from .test_converge import _changed_tasks, _playbook, _recap

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(900)]

A, B = "0.2.0", "0.2.1"
RESTART = "RUNNING HANDLER [haproxy_sync : Restart haproxy-sync.]"


@dataclass
class Upgrade:
    venv: Path
    runs: dict[str, subprocess.CompletedProcess[str]]
    restarts: dict[str, tuple[str, int, int, int, int]]  # step -> (version, worker and reloads before/after)
    serving: set[str]  # what HAProxy answered with after the last restart

    def current(self) -> str:
        return os.readlink(self.venv / "current")


@pytest.fixture(scope="module")
def upgrade(tmp_path_factory: pytest.TempPathFactory, ansible_env: dict[str, str]) -> Upgrade:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("the converge installs apt packages and creates system users: run it as root on Debian/Ubuntu")
    root = tmp_path_factory.mktemp("upgrade")
    artifacts = {}
    for version in (A, B):
        built = run([str(REPO / "scripts" / "release"), version, str(root / "dist")], timeout=240, cwd=REPO,
                    env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(Path.home())})
        assert built.returncode == 0, tail(built)
        artifacts[version] = root / "dist" / f"haproxy-sync-{version}.tar.gz"
    base = {
        "haproxy_manage_service": False,
        "haproxy_config_dir": str(root / "etc/haproxy"),
        "haproxy_defaults_file": str(root / "etc/default/haproxy"),
        "haproxy_server_state_file": str(root / "var/lib/haproxy/server-state"),
        "haproxy_sync_manage_service": False,
        "haproxy_sync_install_source": "release",
        "haproxy_sync_venv_dir": str(root / "opt/haproxy-sync"),
        "haproxy_sync_config_dir": str(root / "etc/haproxy-sync"),
        "haproxy_sync_systemd_unit_dir": str(root / "etc/systemd/system"),
        "haproxy_sync_server_state_file": str(root / "var/lib/haproxy/server-state"),
        "haproxy_sync_haproxy_config_path": str(root / "etc/haproxy/haproxy.cfg"),
    }
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    inventory = root / "inventory.ini"
    inventory.write_text("localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n")
    http, stats, metrics = free_port(), free_port(), free_port()
    sockets = {"master": root / "run/haproxy-master.sock", "admin": root / "run/haproxy/admin.sock"}
    sockets["admin"].parent.mkdir(parents=True)
    runs, restarts = {}, {}
    with ExitStack() as stack:
        consul = stack.enter_context(devconsul())
        app = App("cabify-1")
        stack.callback(app.stop)
        register(consul.url, app)
        base |= {
            "haproxy_master_socket": str(sockets["master"]), "haproxy_runtime_socket": str(sockets["admin"]),
            "haproxy_http_bind": f"127.0.0.1:{http}", "haproxy_stats_bind": f"127.0.0.1:{stats}",
            "haproxy_sync_haproxy_master_socket": str(sockets["master"]),
            "haproxy_sync_haproxy_stats_socket": str(sockets["admin"]),
            "haproxy_sync_haproxy_http_bind": f"127.0.0.1:{http}",
            "haproxy_sync_haproxy_stats_bind": f"127.0.0.1:{stats}",
            "haproxy_sync_consul_address": consul.url, "haproxy_sync_metrics_listen": f"127.0.0.1:{metrics}",
            "haproxy_sync_discovery_hosts": ["*.test"], "haproxy_sync_networks": ["127.0.0.0/8"],
        }
        daemon: Daemon | None = None
        for step, version in (("A", A), ("A again", A), ("B", B), ("back to A", A)):
            extra = root / f"vars-{step.replace(' ', '-')}.json"
            extra.write_text(json.dumps({**base, "haproxy_sync_release": str(artifacts[version])}))
            proc = _playbook(ansible_env, inventory, extra)
            assert proc.returncode == 0, f"converge {step}: exit {proc.returncode}\n{tail(proc)}"
            runs[step] = proc
            if daemon is None:  # after the first converge: HAProxy from the role's config, the daemon from the link
                hap = HAProxyProcess(str(haproxy.find_binary("haproxy")), root / "etc/haproxy/haproxy.cfg",
                                     sockets["master"], root / "haproxy.log")
                hap.start()
                stack.callback(hap.stop)
                daemon = Daemon(root, metrics)
                stack.callback(daemon.stop)
                daemon.start()
            elif RESTART in proc.stdout:  # what the handler does under systemd: the unit runs the link
                before = _worker(sockets["master"])
                daemon.stop()
                daemon.start()
                restarts[step] = (daemon.version(), *before, *_worker(sockets["master"]))
        serving = {http_get(f"http://127.0.0.1:{http}/")[1].strip() for _ in range(3)}
    return Upgrade(root / "opt/haproxy-sync", runs, restarts, serving)


def _worker(master_socket: Path) -> tuple[int, int]:
    info = master.show_proc(master_socket)
    assert info.current_worker is not None
    return info.current_worker, info.reloads


class Daemon:
    """`haproxy-sync run` from the `current` link, as the unit starts it."""

    def __init__(self, root: Path, metrics_port: int) -> None:
        self.root, self.metrics_port = root, metrics_port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = self.root / "opt/haproxy-sync/current/bin/haproxy-sync"
        log = (self.root / "daemon.log").open("ab")
        config = self.root / "etc/haproxy-sync/config.toml"
        self.process = subprocess.Popen([str(binary), "run", "--config", str(config)], stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL)
        log.close()
        wait_until(lambda: self._ready(), 60, what=f"haproxy-sync ready (see {self.root / 'daemon.log'})")

    def _ready(self) -> bool:
        assert self.process is not None and self.process.poll() is None, (self.root / "daemon.log").read_text()
        try:
            return http_get(f"http://127.0.0.1:{self.metrics_port}/ready")[0] == 200
        except OSError:  # not listening yet
            return False

    def version(self) -> str:
        return json.loads(http_get(f"http://127.0.0.1:{self.metrics_port}/status")[1])["version"]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(15)


def test_release_a_installs_and_a_second_converge_changes_nothing(upgrade: Upgrade) -> None:
    assert _recap(upgrade.runs["A"])["changed"] > 0
    again = upgrade.runs["A again"]
    assert _recap(again)["changed"] == 0, _changed_tasks(again.stdout)
    assert RESTART not in again.stdout


def test_b_installs_beside_a_and_moving_the_link_is_the_one_restart(upgrade: Upgrade) -> None:
    proc = upgrade.runs["B"]
    changed = _changed_tasks(proc.stdout)
    assert "haproxy_sync : Install the release into its virtualenv, from its own wheels only." in changed
    assert "haproxy_sync : Point the current link at the release." in changed
    assert proc.stdout.count(RESTART) == 1, "one restart for the switch"
    assert {p.name for p in (upgrade.venv / "releases").iterdir()} == {A, B}, "A stays for a rollback"


@pytest.mark.parametrize(("step", "version"), [("B", B), ("back to A", A)])
def test_the_restart_of_a_switch_runs_the_new_version_and_keeps_haproxys_worker(
    upgrade: Upgrade, step: str, version: str
) -> None:
    running, worker, reloads, worker_after, reloads_after = upgrade.restarts[step]
    assert running == version, "the daemon that came back is the link's release"
    assert (worker_after, reloads_after) == (worker, reloads), "HAProxy was not reloaded by the restart"
    assert upgrade.serving == {"cabify-1"}, "and it kept serving the instance from Consul"


def test_rolling_back_reinstalls_nothing_and_moves_the_link_back(upgrade: Upgrade) -> None:
    proc = upgrade.runs["back to A"]
    changed = _changed_tasks(proc.stdout)
    assert changed == ["haproxy_sync : Point the current link at the release."], changed
    assert proc.stdout.count(RESTART) == 1
    assert upgrade.current() == str(upgrade.venv / "releases" / A)
    says = run([str(upgrade.venv / "current" / "bin" / "haproxy-sync"), "--version"], timeout=30)
    assert says.stdout.startswith(f"haproxy-sync {A} "), tail(says)
    unit = (upgrade.venv.parents[1] / "etc/systemd/system/haproxy-sync.service").read_text()
    assert f"ExecStart={upgrade.venv}/current/bin/haproxy-sync run" in unit, "the unit names the link, not a version"
