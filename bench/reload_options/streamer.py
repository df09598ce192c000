"""The streaming backend of the long-lived scenario: responses that hold a connection for seconds.

Why it exists: with short requests an old worker empties within a moment of a reload, so
``hard-stop-after`` never has anything to cut. A stream (server-sent events, a download, a
long-poll, a websocket) keeps the old worker alive until it ends; this server provides such
connections. ``GET /stream?seconds=S`` answers 200 with a chunked body, ``tick`` every 0.5 s for S
seconds (at most 120), then ``end``; the client treats a body without ``end`` as a cut stream.

A copy of the idea in ``bench/churn`` rather than an import: each benchmark owns its own files.
Run as ``python -m bench.reload_options.streamer --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiohttp import web

TICK = 0.5
MAX_SECONDS = 120.0


async def stream(request: web.Request) -> web.StreamResponse:
    """Send ``tick`` every 0.5 s for ``?seconds=`` seconds, then ``end``; a client leaving ends it."""
    try:
        seconds = min(MAX_SECONDS, max(0.0, float(request.query.get("seconds", "10"))))
    except ValueError:
        raise web.HTTPBadRequest(text="seconds must be a number\n") from None
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        for _ in range(int(seconds / TICK)):
            await response.write(b"tick\n")
            await asyncio.sleep(TICK)
        await response.write(b"end\n")
        await response.write_eof()
    except ConnectionResetError:
        pass  # HAProxy cut it (hard stop): the client records that
    return response


async def ok(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Streaming backend for the reload-options benchmark.")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = web.Application()
    app.router.add_get("/stream", stream)
    app.router.add_get("/{tail:.*}", ok)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None, shutdown_timeout=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
