"""Under journald the daemon's lines are native journal entries with their event and fields, and a
start that fails says why at priority 3 (``journalctl -p err -u haproxy-sync``), not as raw stderr.

journald itself does not run here: a datagram socket speaks its side of the native protocol, and the
daemon's stderr is a file JOURNAL_STREAM names, as systemd connects it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import DaemonProcess, Stack, consul_put
from tests.unit.test_logs import parse_datagram

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")


class Journal:
    """A journald stand-in: the socket, and the environment that makes a process log to it."""

    def __init__(self, root: Path) -> None:
        self.path = root / "journal.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.entries: list[dict[str, str]] = []

    def env(self, stderr: Path) -> dict[str, str]:
        stderr.touch()
        st = stderr.stat()
        return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}", "HAPROXY_SYNC_JOURNAL_SOCKET": str(self.path)}

    def wait_for(self, seconds: float, **fields: str) -> dict[str, str]:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            found = [e for e in self.entries if all(e.get(k) == v for k, v in fields.items())]
            if found:
                return found[0]
            try:
                self.entries.append(parse_datagram(self.sock.recv(65536)))
            except TimeoutError:
                continue
        raise AssertionError(f"no journal entry with {fields} in {seconds}s; got {self.entries[-5:]}")

    def close(self) -> None:
        self.sock.close()


def test_a_start_with_a_broken_config_says_why_at_priority_err(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    try:
        config = tmp_path / "config.toml"
        config.write_text('[consul]\naddres = "http://127.0.0.1:1"\n')
        stderr = tmp_path / "stderr"
        env = {**os.environ, **journal.env(stderr)}
        with stderr.open("r+") as handle:
            result = subprocess.run([sys.executable, "-m", "haproxy_sync.cli", "run", "--config", str(config)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=handle, env=env,
                                    timeout=60, text=True)
        assert result.returncode == 1
        entry = journal.wait_for(5, EVENT="config.invalid")
        assert entry["PRIORITY"] == "3" and entry["SYSLOG_IDENTIFIER"] == "haproxy-sync"
        assert "consul.addres" in entry["MESSAGE"] and "did you mean" in entry["MESSAGE"], entry
        assert stderr.read_text() == "", "all of it went to the journal, none as raw stderr"
    finally:
        journal.close()


def test_an_apply_is_an_entry_naming_the_service_and_instance(tmp_path: Path, consul: DevConsulThread,
                                                              make_apps) -> None:
    journal = Journal(tmp_path)
    with ExitStack() as exits:
        exits.callback(journal.close)
        stack = Stack(tmp_path, consul, make_apps(2), exits)
        stack.daemon.stop()
        log = tmp_path / "journal-daemon.log"
        daemon = DaemonProcess(stack.layout.config_toml, log, env=journal.env(log))
        exits.callback(daemon.stop)
        journal.wait_for(30, EVENT="apply.done")
        consul_put(stack.consul.url, f"/v1/agent/service/deregister/{stack.apps[0].instance_id}")
        entry = journal.wait_for(15, EVENT="apply.done", PATH="runtime")
        assert entry["SERVICE"] == "cabify" and entry["INSTANCE"] == stack.apps[0].instance_id, entry
        assert entry["PRIORITY"] == "6" and float(entry["DURATION_MS"]) > 0 and int(entry["COMMANDS"]) >= 1
        assert entry["MESSAGE"].startswith("applied cabify: 1 servers (+0 -1 ~0); runtime API"), entry
        assert "Traceback" not in daemon.log()
