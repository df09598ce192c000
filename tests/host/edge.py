"""An edge inside a box: HAProxy from Debian's own haproxy.service, haproxy-sync installed from the release
artifact and run by the unit ``haproxy-sync systemd-unit`` prints, both laid out as the Ansible roles
``haproxy`` and ``haproxy_sync`` lay them out (paths, users, modes), so that what the box finds is what a
host converged by the roles would do.

The unit runs exactly as shipped: no drop-in. The three product bugs the box found in it (docs/host-box.md,
"What the box found") are fixed, and test_unit.py keeps a test for each.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from tests.helpers import free_port, http_get, wait_until
from tests.host.box import REPO, Box

#: The version scripts/release stamps on the artifact the boxes install: a number no real release has.
RELEASE_VERSION = "0.0.1.dev0"
UNIT = "haproxy-sync.service"
VENV = "/opt/haproxy-sync"
BINARY = f"{VENV}/current/bin/haproxy-sync"
CONFIG = "/etc/haproxy-sync/config.toml"
MASTER_SOCKET = "/run/haproxy-master.sock"
#: Debian's packaged haproxy.cfg, kept aside at install: each test starts HAProxy from it again.
PRISTINE_HAPROXY_CFG = "/root/haproxy.cfg.debian"

def build_release(out: Path, version: str, python: str) -> Path:
    """scripts/release VERSION OUT: the wheel of the tree as it is plus its locked dependencies."""
    proc = subprocess.run([str(REPO / "scripts" / "release"), version, str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=False, stdin=subprocess.DEVNULL,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": python, "HOME": str(Path.home())})
    assert proc.returncode == 0, f"scripts/release failed:\n{proc.stdout}{proc.stderr}"
    artifact = out / f"haproxy-sync-{version}.tar.gz"
    assert artifact.is_file(), f"scripts/release wrote no {artifact}"
    return artifact


def install(box: Box, artifact: Path, version: str = RELEASE_VERSION) -> None:
    """Install HAProxy's and haproxy-sync's side of an edge as the roles do, without Ansible.

    The release goes to <venv>/releases/VERSION with <venv>/current pointing at it (install_release.yml,
    activate.yml); the unit is what ``haproxy-sync systemd-unit`` prints for the role's arguments.
    """
    release = f"{VENV}/releases/{version}"
    house = f"{VENV}/artifacts/haproxy-sync-{version}"
    box.extract(artifact, f"{VENV}/artifacts")
    box.sh(f"""
        getent group haproxy-sync >/dev/null || groupadd --system haproxy-sync
        id haproxy-sync >/dev/null 2>&1 || useradd --system --gid haproxy-sync --groups haproxy --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin --comment haproxy-sync haproxy-sync
        cd {house} && sha256sum --check --quiet --strict SHA256SUMS
        python3 -m venv {release}
        {release}/bin/pip install --disable-pip-version-check --quiet --no-index --find-links {house} \
            --constraint {house}/requirements.lock haproxy-sync=={version}
        ln -sfn {release} {VENV}/current
        cp -p /etc/haproxy/haproxy.cfg {PRISTINE_HAPROXY_CFG}
        chown haproxy-sync /etc/haproxy /var/lib/haproxy
        chmod u+rwx,g-w,o-w /etc/haproxy /var/lib/haproxy
        install -d -o root -g haproxy-sync -m 0750 /etc/haproxy-sync
        printf '%s\\n' 'CONFIG="/etc/haproxy/haproxy.cfg"' \
            'EXTRAOPTS="-S {MASTER_SOCKET},mode,660,group,haproxy"' > /etc/default/haproxy
    """, timeout=600)
    unit = box.run(BINARY, "systemd-unit", "--exec-path", BINARY, "--user", "haproxy-sync", "--group", "haproxy",
                   "--config", CONFIG).stdout
    box.path(f"/etc/systemd/system/{UNIT}").write_text(unit.strip() + "\n")
    box.systemctl("daemon-reload")


@dataclass(frozen=True)
class ShowProc:
    """HAProxy's master CLI ``show proc``: the master, its reload count and its current workers."""

    master: int
    reloads: int
    workers: tuple[int, ...]


#: Run inside the box with its python3: HAProxy's own answer, no haproxy-sync code in between.
_SHOW_PROC = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(b"show proc\\n")
s.shutdown(socket.SHUT_WR)  # the end of the commands: the master answers and closes
data = b""
while chunk := s.recv(65536):
    data += chunk
sys.stdout.write(data.decode())
"""


@dataclass
class Edge:
    """One test's edge: its ports, its devconsul outside, its config.toml inside, and the journal from its
    start on, so a test reads only what happened during it."""

    box: Box
    consul_url: str
    http_port: int = field(default_factory=free_port)
    stats_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    since: float = 0.0  # the machine's clock, which is the box's, when this test's edge was reset

    def settings(self, **sections: dict[str, Any]) -> dict[str, Any]:
        """config.toml as the role writes it for this edge's ports, ``sections`` merged over it."""
        base: dict[str, Any] = {
            "log": {"level": "info", "format": "text"},
            "consul": {"address": self.consul_url, "wait": "5s", "backoff_max": "2s"},
            "haproxy": {"binary": "/usr/sbin/haproxy", "config_path": "/etc/haproxy/haproxy.cfg",
                        "master_socket": MASTER_SOCKET, "stats_socket": "/run/haproxy/admin.sock",
                        "http_bind": f"127.0.0.1:{self.http_port}", "stats_bind": f"127.0.0.1:{self.stats_port}"},
            # The test's backends run outside the box on 127.0.0.1, an address the daemon refuses unless listed.
            # watch_files off: a re-read comes from `systemctl reload` (SIGHUP) alone.
            "sync": {"wait_min": "10ms", "wait_max": "200ms", "networks": ["127.0.0.0/8"], "watch_files": False},
            "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
            "services": [{"name": "cabify", "health_path": "/health"}],
        }
        for section, values in sections.items():
            base[section] = {**base.get(section, {}), **values}
        return base

    def write_config(self, settings: dict[str, Any] | str) -> None:
        """config.toml, 0640 root:haproxy-sync as the role installs it."""
        text = settings if isinstance(settings, str) else tomli_w.dumps(settings)
        self.box.path(CONFIG).write_text(text)
        self.box.sh(f"chown root:haproxy-sync {CONFIG} && chmod 0640 {CONFIG}")

    def reset(self) -> None:
        """Back to a host before haproxy-sync's first start: its files gone, HAProxy restarted from Debian's
        config, the journal's start moved to now."""
        self.box.systemctl("stop", UNIT, check=False, timeout=60)
        self.box.systemctl("reset-failed", UNIT, check=False)
        self.box.sh(f"""
            rm -f /etc/haproxy/haproxy.cfg.last-good /etc/haproxy/routes.map /etc/haproxy/.haproxy.cfg.* \
                /var/lib/haproxy/haproxy-sync.running
            install -o haproxy-sync -g haproxy -m 0640 {PRISTINE_HAPROXY_CFG} /etc/haproxy/haproxy.cfg
            printf '1\\n' > /var/lib/haproxy/server-state
            chown haproxy-sync:haproxy /var/lib/haproxy/server-state && chmod 0640 /var/lib/haproxy/server-state
        """)
        self.since = time.time()
        # Tests restart HAProxy often; Debian's unit keeps systemd's start limit (5 starts in 10 s).
        self.box.systemctl("reset-failed", "haproxy.service", check=False)
        self.box.systemctl("restart", "haproxy.service", timeout=60)

    def journal(self, *args: str) -> str:
        """haproxy-sync's journal since this test began (``journalctl -u haproxy-sync ARGS``).

        ``--since`` rather than ``--after-cursor``: journalctl 252 answers nothing at all for a cursor
        together with ``-p`` (seen here: the err entry is there with ``--since``, absent with the cursor).
        """
        return self.box.journal("-u", UNIT, f"--since=@{self.since:.6f}", *args)

    def start(self, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        """``systemctl start haproxy-sync``: returns when systemd has READY, or the start failed."""
        return self.box.systemctl("start", UNIT, check=False, timeout=timeout)

    def main_pid(self) -> int:
        return int(self.box.show(UNIT, "MainPID"))

    def status(self) -> dict[str, Any]:
        """The daemon's /status, fetched from outside the box (the network namespace is shared)."""
        code, body = http_get(f"http://127.0.0.1:{self.metrics_port}/status", timeout=5)
        assert code == 200, (code, body)
        return json.loads(body)

    def show_proc(self) -> ShowProc:
        """``show proc`` on the master socket, read back until the master's answer is whole."""

        def read() -> ShowProc | None:
            proc = self.box.run("python3", "-c", _SHOW_PROC, MASTER_SOCKET, check=False, timeout=15)
            master = re.search(r"^(\d+)\s+master\s+(\d+)", proc.stdout, re.M)
            workers = proc.stdout.partition("# workers")[2].partition("# old workers")[0]
            pids = tuple(int(m.group(1)) for m in re.finditer(r"^(\d+)\s+worker\b", workers, re.M))
            if proc.returncode != 0 or master is None or not pids:  # the master re-executing: ask again
                return None
            return ShowProc(int(master.group(1)), int(master.group(2)), pids)

        return wait_until(read, 20, interval=0.2, what="HAProxy's master answering show proc")

    def wait_active(self, timeout: float = 30.0) -> None:
        wait_until(lambda: self.box.show(UNIT, "ActiveState") == "active", timeout, interval=0.2,
                   what=f"{UNIT} active")

