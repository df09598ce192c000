"""cabify: the demo service behind HAProxy. Python standard library only.

GET /        -> 200 {"service": "cabify", "version": ..., "instance": ..., ...}
GET /health  -> 200 {"status": "ok"}  (503 while shutting down, so checks fail before the exit)

Configured by the environment: PORT (default 8080), CABIFY_VERSION, and the NOMAD_* variables
Nomad sets (NOMAD_ALLOC_ID, NOMAD_ALLOC_INDEX, NOMAD_JOB_NAME, NOMAD_DC).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("CABIFY_VERSION", "dev")
INSTANCE = os.environ.get("NOMAD_ALLOC_ID") or socket.gethostname()
IDENTITY = {
    "service": "cabify",
    "version": VERSION,
    "instance": INSTANCE,
    "alloc_index": os.environ.get("NOMAD_ALLOC_INDEX", ""),
    "job": os.environ.get("NOMAD_JOB_NAME", ""),
    "datacenter": os.environ.get("NOMAD_DC", ""),
    "hostname": socket.gethostname(),
}
stopping = threading.Event()


class Handler(BaseHTTPRequestHandler):
    server_version = f"cabify/{VERSION}"
    protocol_version = "HTTP/1.1"

    def _reply(self, status: int, body: dict[str, str], *, head: bool = False) -> None:
        data = (json.dumps(body, sort_keys=True) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Cabify-Instance", INSTANCE)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _route(self, *, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            if stopping.is_set():
                self._reply(503, {"status": "stopping"}, head=head)
            else:
                self._reply(200, {"status": "ok"}, head=head)
        elif path == "/":
            self._reply(200, IDENTITY, head=head)
        else:
            self._reply(404, {"error": "not found"}, head=head)

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def log_message(self, format: str, *args: object) -> None:  # one line per request, to stderr
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True

    def stop(signum: int, _frame: object) -> None:
        stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(f"cabify {VERSION} ({INSTANCE}) listening on :{port}\n")
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
