"""A bounded, paced HTTP load through HAProxy, so the request-rate panels show real traffic.

Why paced and not as-fast-as-possible: the machine is shared and small, and the point is a steady,
readable request rate (a few hundred per second), not a benchmark of HAProxy. Each worker keeps one
keep-alive connection and opens a new one when HAProxy closes it (it does so after a reload, with
``option idle-close-on-response``). The client's own count of answers by status class is kept per
second, as an independent check of what HAProxy's exporter reports; a connection that fails without
an HTTP answer is counted as ``error:<exception>``.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Load:
    """``workers`` threads sending ``GET /`` to ``host:port`` at ``rate`` requests/s in total."""

    host: str
    port: int
    rate: float = 300.0
    workers: int = 4
    per_second: dict[int, Counter[str]] = field(default_factory=dict)  # epoch second -> class -> count
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for number in range(self.workers):
            thread = threading.Thread(target=self._work, args=(number,), name=f"load-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    def totals(self) -> Counter[str]:
        with self._lock:
            total: Counter[str] = Counter()
            for counts in self.per_second.values():
                total.update(counts)
            return total

    def _count(self, kind: str) -> None:
        second = int(time.time())
        with self._lock:
            self.per_second.setdefault(second, Counter())[kind] += 1

    def _work(self, number: int) -> None:
        interval = self.workers / self.rate
        due = time.monotonic() + interval * number / self.workers
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            due = max(due + interval, time.monotonic() - 1.0)  # no catch-up burst after a stall
            if connection is None:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=5)
            try:
                connection.request("GET", "/")
                response = connection.getresponse()
                response.read()
                self._count(f"{response.status // 100}xx")
                if response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                self._count(f"error:{type(exc).__name__}")
                connection.close()
                connection = None
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.close()
