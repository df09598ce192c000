"""The timeline of Consul changes the sandbox goes through while it is scraped.

Why this mix: each panel of the dashboard should have something real to show, caused the way it is
caused in production, through Consul's API only:

* background churn every few seconds: an instance's ``Weights.Passing`` changes, an instance is
  deregistered and registered again later (Runtime API applies, drains, slots freed and reused);
* extra instances, one more than the backend has free slots (read from haproxy-sync's own
  ``haproxy_sync_servers`` at that moment, so it holds whatever the slot policy is): the slots double,
  one reload (``slots``);
* an instance addressed by a host name (``localhost``), which the Runtime API cannot set, comes and
  goes (reloads, for the reload panel);
* devconsul's documented fault switch answers ``500 No cluster leader``, later ``429`` (the Consul
  error panel, and the daemon keeping its last good data meanwhile);
* node maintenance (every instance critical at once): the empty-backend guard holds the drop, reads
  Consul again, then applies it; HAProxy answers 503 until maintenance ends (the 5xx panel);
* optionally (``--edit-config-at``), a second ``[[services]]`` appended to the sandbox's config.toml,
  the operator's way to force a reload. Off by default because ``haproxy-sync dev`` re-creates
  config.toml from its own settings on every re-read: the edit is dropped, and that rewrite is itself
  an edit the file watcher acts on, so the daemon re-reads about three times a second from then on.

Every action is logged with its time and outcome, so the picture's caption and the JSON say what
happened when. Offsets past the end of the run are skipped; the run must be at least 150 s long.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .sandbox import Sandbox, SandboxError

MIN_DURATION = 150.0


@dataclass
class Event:
    """One action: seconds since the run started, what was done, and any error."""

    at: float
    what: str
    error: str = ""


@dataclass
class Churn:
    """Runs the timeline on a thread from :meth:`start` until the end of ``duration`` or :meth:`stop`."""

    sandbox: Sandbox
    duration: float
    edit_config_at: float | None = None
    seed: int = 7
    events: list[Event] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.started = time.time()
        self._thread = threading.Thread(target=self._run, name="churn", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def _do(self, what: str, action: Callable[[], object]) -> None:
        """Run one action and log it; an action may return a note that is added to its description."""
        at = time.time() - self.started
        try:
            note = action()
        except (SandboxError, OSError) as exc:
            self.events.append(Event(at, what, str(exc)))
        else:
            self.events.append(Event(at, f"{what} ({note})" if isinstance(note, str) else what))

    def timeline(self) -> list[tuple[float, str, Callable[[], object]]]:
        """The scripted acts (offset in seconds, description, action); background churn is separate."""
        box = self.sandbox
        ports = box.instance_ports()
        port = [ports[f"cabify-{n}"] for n in (1, 2, 3, 4)]
        scale = max(1.0, self.duration / 240.0)  # a longer run spreads the acts out
        acts: list[tuple[float, str, Callable[[], object]]] = [
            (35, "register extra instances", self._fill_slots),
            (60, "Consul fault no_leader (500) on", lambda: box.fault("no_leader")),
            (68, "Consul fault off", lambda: box.fault(None)),
            (85, "node maintenance on", lambda: box.node_maintenance(True)),
            (97, "node maintenance off", lambda: box.node_maintenance(False)),
            (115, "register host-1 at localhost (host name)",
             lambda: box.register("host-1", port[2], address="localhost")),
            (135, "deregister host-1", lambda: box.deregister("host-1")),
            (150, "Consul fault rate_limited (429) on", lambda: box.fault("rate_limited")),
            (156, "Consul fault off", lambda: box.fault(None)),
            (170, "register host-2 at localhost (host name)",
             lambda: box.register("host-2", port[3], address="localhost")),
            (190, "deregister host-2", lambda: box.deregister("host-2")),
            (205, "deregister the extra instances", self._drop_extras),
        ]
        acts = [(at * scale, what, action) for at, what, action in acts]
        if self.edit_config_at is not None:
            acts.append((self.edit_config_at, "config.toml: second [[services]] (billing) appended",
                         lambda: self._edit_config(port[0])))
        return sorted((a for a in acts if a[0] < self.duration - 10), key=lambda a: a[0])

    def _fill_slots(self) -> str:
        """Register one more instance than there are free slots (on running apps' ports), so the slots double."""
        box = self.sandbox
        free = box.servers("cabify").get("free", 0)
        ports = sorted(box.instance_ports().values())
        for number in range(1, free + 2):
            box.register(f"extra-{number}", ports[number % len(ports)])
            self.extras.append(f"extra-{number}")
        return f"{free + 1}, {free} slots were free"

    def _drop_extras(self) -> None:
        for instance in self.extras:
            self.sandbox.deregister(instance)
        self.extras.clear()

    def _edit_config(self, port: int) -> None:
        box = self.sandbox
        box.register("billing-1", port, service="billing")
        assert box.runtime_dir is not None
        config: Path = box.runtime_dir / "config.toml"
        with config.open("a") as handle:
            handle.write('[[services]]\nname = "billing"\nhost = "billing.local"\n')

    def _run(self) -> None:
        rng = random.Random(self.seed)
        acts = self.timeline()
        away: dict[str, float] = {}  # deregistered background instance -> when it comes back
        ports = self.sandbox.instance_ports()
        background = sorted(i for i in ports if i.startswith("cabify-"))
        next_background, flip = 10.0, False
        while not self._stop.is_set():
            now = time.time() - self.started
            if now >= self.duration:
                return
            while acts and acts[0][0] <= now:
                _, what, action = acts.pop(0)
                self._do(what, action)
            for instance, back_at in list(away.items()):
                if back_at <= now:
                    away.pop(instance)
                    self._do(f"register {instance} again", lambda i=instance: self.sandbox.register(i, ports[i]))
            if now >= next_background:
                present = [i for i in background if i not in away]
                instance = rng.choice(present)
                if flip and len(present) > 4:
                    away[instance] = now + 15
                    self._do(f"deregister {instance}", lambda i=instance: self.sandbox.deregister(i))
                else:
                    weight = rng.choice([1, 2, 3, 5])
                    self._do(f"{instance} weight {weight}",
                             lambda i=instance, w=weight: self.sandbox.register(i, ports[i], weight=w))
                flip = not flip
                next_background = now + 6
            self._stop.wait(0.1)
