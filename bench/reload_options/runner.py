"""One measured run: a fresh HAProxy under test, the load, the reload schedule, the sampler.

Three scenarios:

* ``keep-alive``: wrk's 50 keep-alive connections of short requests; ``count`` reloads at ``rate``
  per second starting ``lead`` seconds in; the load goes on ``tail`` seconds after the last one so
  that failures a reload causes late are counted. This is the question of issue 4 point 5.
* ``long-lived``: the same load, plus a few clients each holding one stream longer than the
  variant's ``hard-stop-after``, started one after another over the reload window so that several
  worker generations hold some. It shows the trade: without a hard stop old workers live until
  their last stream ends; with one they are killed and their streams cut. The hard stop used here
  is shorter than the template would use (e.g. 10 s instead of 30 s, streams of 20 s instead of
  40 s) so that the run stays short; the mechanism does not depend on the scale.
* ``idle``: no load; a few keep-alive clients that went quiet, and one reload: how long each option
  keeps the old worker for them (:func:`run_idle`).
"""

from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

from haproxy_sync import master

from .config import Variant
from .load import StreamClients, Wrk
from .observe import ProcSample, ProcSampler, Reloader
from .stack import Stack

POST_LOAD_OBSERVE = 1.0  # seconds of `show proc` after wrk stops: its connections close, old workers go


@dataclass(frozen=True)
class Schedule:
    """``count`` reloads at ``rate`` per second; its name (``20@2/s``) labels tables and JSON."""

    count: int
    rate: float

    @property
    def name(self) -> str:
        return f"{self.count}@{self.rate:g}/s" if self.count else "none"

    @property
    def window(self) -> float:
        """Seconds from the first reload being due to the last."""
        return (self.count - 1) / self.rate if self.count > 1 else 0.0


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _old_worker_figures(samples: list[ProcSample], last_reload: float | None, load_end: float) -> dict[str, Any]:
    answered = [s for s in samples if s.old is not None]
    if not answered:
        return {"max_old": None, "old_at_load_end": None, "old_at_end": None, "drain_s": None}
    before_end = [s for s in answered if s.t <= load_end]
    drain = None
    if last_reload is not None and answered[-1].old == 0:
        busy = [i for i, s in enumerate(answered) if s.old]
        gone = answered[busy[-1] + 1] if busy else next(s for s in answered if s.t >= last_reload or s is answered[-1])
        drain = max(0.0, gone.t - last_reload)
    return {
        "max_old": max(s.old or 0 for s in answered),
        "old_at_load_end": before_end[-1].old if before_end else None,
        "old_at_end": answered[-1].old,
        "drain_s": _round(drain),  # from the last reload to old workers gone for good; None: still there at the end
    }


def run(
    stack: Stack,
    variant: Variant,
    schedule: Schedule,
    *,
    scenario: str,
    repeat: int,
    lead: float,
    tail: float,
    duration: float | None = None,
    stream_seconds: float = 0.0,
    stream_clients: int = 0,
) -> dict[str, Any]:
    """Measure one variant once; return everything recorded, as plain data for the JSON."""
    seconds = duration or (lead + schedule.window + tail + (stream_seconds if stream_clients else 0.0))
    process = stack.start_under_test(variant)
    t0 = time.monotonic()
    sampler = ProcSampler(process.master_socket, t0)
    wrk = Wrk(stack.url, seconds)
    reloader = Reloader(process.master_socket, schedule.count, schedule.rate, t0, lead) if schedule.count else None
    streams = None
    if stream_clients:
        spread = max(schedule.window, 1.0)
        offsets = [lead * 0.5 + i * spread / max(stream_clients - 1, 1) for i in range(stream_clients)]
        streams = StreamClients(stack.ports.frontend, stream_seconds, offsets, t0)
    try:
        sampler.start()
        wrk.start()
        if reloader is not None:
            reloader.start()
        if streams is not None:
            streams.start()
        result = wrk.wait()
        load_end = time.monotonic() - t0
        if reloader is not None:
            reloader.join(15.0)
        if streams is not None:
            streams.join(stream_seconds + 15.0)
        time.sleep(POST_LOAD_OBSERVE)
    finally:
        for stopper in (reloader, streams):
            if stopper is not None:
                stopper.stop()
        sampler.stop()
        wrk.stop()
        stack.stop_under_test()
    records = reloader.records if reloader is not None else []
    confirmed = [r for r in records if r.ok]
    last_reload = max((r.done for r in records), default=None)
    took = sorted(r.done - r.sent for r in records)
    outcome: dict[str, Any] = {
        "scenario": scenario,
        "variant": variant.name,
        "label": variant.label,
        "options": variant.describe(),
        "schedule": schedule.name,
        "repeat": repeat,
        "load_seconds": seconds,
        "wrk": result.as_dict(),
        "reloads": {
            "planned": schedule.count,
            "sent": len(records),
            "confirmed": len(confirmed),
            "errors": sorted({r.error for r in records if not r.ok}),
            "achieved_rate": _round((len(records) - 1) / (records[-1].sent - records[0].sent))
            if len(records) > 1 else None,
            "max_late_s": _round(max((r.sent - r.due for r in records), default=None)),
            "confirm_ms_p50": _round(took[len(took) // 2] * 1000 if took else None, 1),
            "confirm_ms_max": _round(took[-1] * 1000 if took else None, 1),
            "first_s": _round(records[0].sent if records else None),
            "last_s": _round(last_reload),
        },
        **_old_worker_figures(sampler.samples, last_reload, load_end),
        "samples": [[round(s.t, 3), s.workers, s.old] for s in sampler.samples],
    }
    if streams is not None:
        outcomes = sorted(streams.outcomes, key=lambda o: o.start)
        outcome["streams"] = {
            "seconds": stream_seconds,
            "started": len(outcomes),
            "complete": sum(o.complete for o in outcomes),
            "cut": sum(not o.complete for o in outcomes),
            "each": [{k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(o).items()} for o in outcomes],
        }
    return outcome


def run_idle(
    stack: Stack, variant: Variant, *, connections: int = 10, observe: float = 40.0
) -> dict[str, Any]:
    """One reload with ``connections`` idle keep-alive clients (one request each, then silence).

    Why: ``idle-close-on-response`` keeps an idle connection open until its next response, and an
    idle client sends none; HAProxy's documentation warns that old workers then live longer. This
    measures how long (here ``timeout http-keep-alive`` bounds it) and what each option changes.
    """
    process = stack.start_under_test(variant)
    t0 = time.monotonic()
    sampler = ProcSampler(process.master_socket, t0)
    clients: list[socket.socket] = []
    try:
        for _ in range(connections):
            client = socket.create_connection(("127.0.0.1", stack.ports.frontend), timeout=5.0)
            clients.append(client)
            client.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            client.recv(4096)  # the short answer; the connection stays open (keep-alive)
        sampler.start()
        sent = time.monotonic() - t0
        master.reload(process.master_socket, timeout=10.0)
        done = time.monotonic() - t0
        gone = None
        while time.monotonic() - t0 < done + observe:
            info = master.show_proc(process.master_socket)
            if not any(generation > 0 for _, generation in info.workers):
                gone = time.monotonic() - t0
                break
            time.sleep(0.05)
        closed = 0
        for client in clients:
            client.settimeout(0.2)
            try:
                closed += client.recv(1) == b""
            except TimeoutError:
                pass
            except OSError:
                closed += 1
    finally:
        for client in clients:
            client.close()
        sampler.stop()
        stack.stop_under_test()
    return {
        "scenario": "idle",
        "variant": variant.name,
        "label": variant.label,
        "options": variant.describe(),
        "connections": connections,
        "reload_sent_s": _round(sent),
        "old_worker_life_s": _round(gone - done) if gone is not None else None,
        "observed_s": observe,
        "closed_by_haproxy": closed,
        "samples": [[round(s.t, 3), s.workers, s.old] for s in sampler.samples],
    }
