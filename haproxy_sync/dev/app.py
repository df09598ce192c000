"""One sandbox app instance: ``/`` answers its instance id, ``/health`` answers ok.

Stdlib only, so that starting seven of them is quick. ``python -m haproxy_sync.dev.app --port P --id ID``.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _app_handler(instance_id: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = b"ok\n" if self.path == "/health" else f"{instance_id}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # health checkers close connections early; not worth a traceback


def serve_app(port: int, instance_id: str, host: str = "127.0.0.1") -> None:
    """One app instance: ``/`` answers its instance id, ``/health`` answers ok. Runs until killed."""
    server = _QuietServer((host, port), _app_handler(instance_id))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        server.serve_forever()
    server.server_close()



if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="One sandbox app instance.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--id", required=True)
    args = parser.parse_args()
    serve_app(args.port, args.id)
