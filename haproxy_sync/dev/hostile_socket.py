"""A hostile HAProxy admin socket for the tests and the soak benchmark (``--faults``): a unix socket
standing where the daemon expects HAProxy's runtime API, forwarding each command to the real one and
answering as told.

Modes: ``pass`` (the real answer), ``drip`` (the real answer, one byte every ``interval``), ``hang``
(read the command, never answer), ``garbage`` (an answer of no documented shape). ``mode`` may be
switched at any time, from any thread; it applies to the connections accepted from then on. HAProxy
itself binds ``<path>.real`` (the template of :func:`template_beside`).

Why in ``haproxy_sync/dev/`` and not in ``tests/``: the benchmarks must not import the tests.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

from haproxy_sync.config import default_template_path


def template_beside(directory: Path) -> Path:
    """The built-in template, with HAProxy's admin socket moved to ``<stats_socket>.real``."""
    text = default_template_path().read_text()
    if "stats socket {{ stats_socket }} " not in text:
        raise ValueError(f"{default_template_path()}: no 'stats socket {{{{ stats_socket }}}} ' line to move")
    path = directory / "hostile-socket.cfg.j2"
    path.write_text(text.replace("stats socket {{ stats_socket }} ", 'stats socket {{ stats_socket ~ ".real" }} '))
    return path


class HostileSocket:
    """Serves ``path``; every connection is one exchange with ``path.real``, answered by ``mode``."""

    def __init__(self, path: Path, interval: float = 0.2) -> None:
        self.path = path
        self.upstream = Path(f"{path}.real")
        self.mode = "pass"
        self.interval = interval
        self.exchanges = 0
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(64)
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="hostile-socket", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._exchange, args=(conn,), daemon=True).start()

    def _exchange(self, conn: socket.socket) -> None:
        self.exchanges += 1
        mode = self.mode
        with conn:
            conn.settimeout(30)
            request = b""
            with contextlib.suppress(OSError):
                while not request.endswith(b"\n") and (chunk := conn.recv(65536)):
                    request += chunk
            if mode == "hang":
                self._stop.wait(60)
                return
            if mode == "garbage":
                with contextlib.suppress(OSError):
                    conn.sendall(b"\x00\x1b[2J; del map /etc/passwd\n# be_id srv_id\n1 2 3\n")
                return
            answer = self._ask(request)
            with contextlib.suppress(OSError):
                if mode == "drip":
                    for byte in answer:
                        if self._stop.is_set():
                            return
                        conn.sendall(bytes([byte]))
                        time.sleep(self.interval)
                else:
                    conn.sendall(answer)

    def _ask(self, request: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
            upstream.settimeout(10)
            try:
                upstream.connect(str(self.upstream))
                upstream.sendall(request)
                upstream.shutdown(socket.SHUT_WR)
                chunks = []
                while chunk := upstream.recv(65536):
                    chunks.append(chunk)
                return b"".join(chunks)
            except OSError:
                return b""

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(2)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
