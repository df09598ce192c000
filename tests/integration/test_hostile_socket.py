"""A runtime socket that answers garbage: the daemon says so on one line, stays alive, keeps the state
file HAProxy loads clean, and serves again once the socket answers sanely.

HAProxy binds its admin socket at ``<stats_socket>.real`` (a copy of the default template); the daemon
talks to ``stats_socket``, where a proxy in the test process forwards every command to HAProxy and,
while hostile, rewrites the answers to ``show servers state``.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import Stack, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")

GARBAGE = "UP\x1b[2J"  # where srv_op_state goes: a number HAProxy never writes, and a terminal escape


def garble(answer: str) -> str:
    """Every server line's srv_op_state replaced, and one more line in Unicode digits (int() reads them)."""
    lines = answer.split("\n")
    out = []
    for number, line in enumerate(lines):
        cols = line.split(" ")
        if number > 0 and not line.startswith("#") and len(cols) > 5:
            cols[5] = GARBAGE
        out.append(" ".join(cols))
    last = max(number for number, line in enumerate(out) if line.strip())
    out.insert(last + 1, "3 cabify 9 slot9 127.0.0.1 \u0662 0 1 1 5 6 3 4 6 0 0 0 - \u0668\u0660 - 0 0 - - 0")
    return "\n".join(out)


class HostileSocket:
    """A unix-socket server at ``path`` forwarding to HAProxy's socket at ``real``, one command line
    per connection (HAProxy's non-interactive mode); ``hostile`` turns garbling on and off."""

    def __init__(self, path: Path, real: Path) -> None:
        self.path, self.real = path, real
        self.hostile = False
        self.garbled = 0
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(64)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
            client.settimeout(10)
            upstream.settimeout(10)
            try:
                request = b""
                while chunk := client.recv(65536):
                    request += chunk
                upstream.connect(str(self.real))
                upstream.sendall(request)
                upstream.shutdown(socket.SHUT_WR)
                answer = b""
                while chunk := upstream.recv(65536):
                    answer += chunk
                if self.hostile and request.strip().startswith(b"show servers state"):
                    answer = garble(answer.decode()).encode()
                    self.garbled += 1
                client.sendall(answer)
            except OSError:
                pass  # a client that went away; HAProxy's socket blinking during a reload

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()


@pytest.fixture
def proxied(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[tuple[Stack, HostileSocket]]:
    default = Path(haproxy.__file__).parent / "templates" / "haproxy.cfg.j2"
    template = tmp_path / "real-socket.cfg.j2"
    text = default.read_text()
    assert text.count("stats socket {{ stats_socket }} ") == 1
    template.write_text(text.replace("stats socket {{ stats_socket }} ", "stats socket {{ stats_socket }}.real "))
    stats_socket = tmp_path / "admin.sock"  # what Layout puts in config.toml
    proxy = HostileSocket(stats_socket, Path(f"{stats_socket}.real"))
    with ExitStack() as exits:
        exits.callback(proxy.close)
        stack = Stack(tmp_path, consul, make_apps(3), exits, template=template, extra='reconcile_interval = "1s"\n')
        assert stack.layout.stats_socket == stats_socket
        yield stack, proxy


def real_serving(stack: Stack) -> set[str]:
    """Instance ids HAProxy serves, read from its own socket (not through the proxy)."""
    by_port = {app.port: app.instance_id for app in stack.apps}
    states = haproxy.servers_state(Path(f"{stack.layout.stats_socket}.real"), "cabify")
    return {by_port.get(s.port, f"?{s.port}") for s in states if s.up and s.weight > 0}


def test_garbage_from_the_runtime_socket_is_one_line_and_the_daemon_lives_on(
    proxied: tuple[Stack, HostileSocket],
) -> None:
    stack, proxy = proxied
    assert stack.serving() == {"cabify-1", "cabify-2", "cabify-3"}, "the proxy forwards sane answers as they are"
    state_file = stack.layout.root / "server-state"
    proxy.hostile = True
    # The reconcile (every 1s) reads the servers back, and so does the runtime path of a change.
    stack.consul.call("deregister_service", "cabify-1")
    wait_until(lambda: proxy.garbled >= 3 or not stack.daemon.alive(), 10, what="the daemon reading garbled answers")
    assert stack.daemon.alive(), "the garbled answer ended the daemon:\n" + stack.daemon.log()[-1500:]
    complaint = "unexpected `show servers state` answer: cannot read server line"
    stack.daemon.wait_for_log(complaint, timeout=10)
    stack.daemon.wait_for_log("reconcile: cannot read HAProxy's servers: " + complaint, timeout=10)
    wait_until(lambda: real_serving(stack) == {"cabify-2", "cabify-3"}, 10,
               what="the change applied without trusting the garbled read-back")
    assert stack.daemon.alive(), stack.daemon.log()[-2000:]
    log = stack.daemon.log()
    assert "Traceback" not in log and "ValueError" not in log
    said = [line for line in log.splitlines() if complaint in line]
    assert said and all("\x1b" not in line and "\\x1b" in line for line in said), "escaped, on one line each"
    assert all(re.match(r"\d{4}-\d\d-\d\dT", line) for line in log.splitlines()), "no answer line of its own"
    if state_file.exists():
        assert GARBAGE not in state_file.read_text() and "\u0662" not in state_file.read_text()

    proxy.hostile = False
    stack.consul.call("deregister_service", "cabify-2")
    wait_until(lambda: stack.serving() == {"cabify-3"}, 10, what="the daemon applying through the sane socket")
    complaints = stack.daemon.log().count(complaint)
    time.sleep(2.5)  # two reconciles, reading the servers back through the sane socket
    assert stack.daemon.log().count(complaint) == complaints, "nothing to complain about any more"
    assert stack.daemon.alive()
    assert "Traceback" not in stack.daemon.log()
