"""The Consul side: one blocking-query watch per service, with Consul's index rules and backoff.

A watch turns a stream of ``/v1/health/service/<name>`` answers into a stream of *changed*
:class:`~haproxy_sync.catalog.Service` values. It follows the rules of Consul's "blocking queries"
documentation: an index that goes backwards resets to a fresh read, an index below 1 is treated as 1,
the data is compared rather than the index (the index moves for unrelated writes and for check output
text), and the loop is rate-limited so that an index that keeps moving cannot spin the CPU.

On errors the watch backs off with jitter up to ``backoff_max`` and keeps its last good value: an
unreachable Consul never yields an empty service. A fault is logged once when it starts (and when its
kind changes) and once when it clears, not once per retry.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import ssl
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import aiohttp
import consul
import consul.aio
from aiohttp.http_exceptions import PayloadEncodingError

from haproxy_sync import logs, rules
from haproxy_sync.catalog import Service, Skipped, parse_health_entries, skipped_summary
from haproxy_sync.config import ConsulSettings, Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Shortest time between two requests of one watch: a moving index cannot make it spin.
MIN_REQUEST_INTERVAL = 0.02
#: Shortest time between two requests while the server answers without blocking.
STALLED_INTERVAL = 1.0
#: Index jumps backwards closer together than this are one episode, logged once.
BACKWARDS_EPISODE = 60.0
#: First retry delay after an error; doubles up to ``backoff_max``.
BACKOFF_BASE = 0.25


class ConsulError(Exception):
    """A Consul read that failed, classified so that logs and metrics can say which fault it is."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def classify(exc: BaseException, service: str, address: str = "") -> ConsulError:
    """Turn whatever the client raised into one :class:`ConsulError` with a short, safe message.

    The message names Consul, its address and the setting that holds it (``Consul at
    http://10.0.0.5:8500 (consul.address) refused the connection``): in a log line beside HAProxy's
    own faults, "connection refused" alone does not say which side refused, nor what to change.
    """
    if isinstance(exc, ConsulError):
        return exc
    where = f"Consul at {address} (consul.address)" if address else "Consul"
    if isinstance(exc, RedirectRefused):
        return ConsulError(
            "redirect",
            f"Consul at {exc.address} (consul.address) answered {exc.status} redirect to {exc.location}; not "
            "followed (the ACL token is only sent to consul.address)",
        )
    if isinstance(exc, consul.ACLPermissionDenied):
        return ConsulError(
            "acl",
            f"{where} answered 403 permission denied reading service {service!r}: the ACL token needs "
            "service:read and node:read (check consul.token / CONSUL_HTTP_TOKEN)",
        )
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return ConsulError("timeout", f"{where} gave no answer within the blocking wait plus margin")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return ConsulError("tls", f"{where}: TLS handshake failed: {_short(exc)}")
    os_error = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(os_error, OSError) and os_error.errno in (errno.EMFILE, errno.ENFILE):
        return ConsulError("fd_limit", "too many open files to connect to Consul: raise the open-files limit "
                                       "(LimitNOFILE=65536 in the systemd unit) or lower consul.max_connections")
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(os_error, OSError) and os_error.errno == errno.ECONNREFUSED:
            return ConsulError("unreachable", f"{where} refused the connection")
        if isinstance(os_error, OSError) and os_error.errno == errno.ENOENT:
            return ConsulError("unreachable", f"{where} cannot be reached: no such socket")
        return ConsulError("unreachable", f"{where} cannot be reached: {_short(_os_reason(os_error) or exc)}")
    if isinstance(exc, aiohttp.ClientPayloadError) and isinstance(exc.__cause__, PayloadEncodingError):
        # The bytes came, but cannot be decoded (garbage Content-Encoding, broken chunking): the
        # answer is wrong, not the connection.
        return ConsulError("bad_answer", f"{where} sent an answer body that cannot be decoded: "
                                         f"{_short(exc.__cause__)}")
    resets = (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, ConnectionResetError)
    if isinstance(exc, resets) or (isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE)):
        return ConsulError("connection_reset", f"{where} closed the connection before the answer was complete")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return ConsulError("connection", f"{where}: {_short(exc)}")
    if isinstance(exc, consul.ACLDisabled):  # py-consul's name for any 401 (Consul's for /v1/acl/* with ACLs off)
        said = f": {_short(exc)}" if str(exc).strip() else ""
        return ConsulError("unauthorized", f"{where} answered 401 Unauthorized{said}: what stands in front of "
                                           "Consul wants credentials (consul.auth / CONSUL_HTTP_AUTH user:password)")
    if isinstance(exc, consul.ConsulException):
        text = str(exc)
        if text.startswith("Failed to decode JSON") or text.startswith("Missing index header"):
            return ConsulError("bad_answer", f"{where} answered no valid JSON with an X-Consul-Index")
        if "No cluster leader" in text:
            return ConsulError("no_leader", f"{where} answered 500 No cluster leader: its servers have no leader")
        if text.startswith("429"):
            return ConsulError("rate_limited", f"{where} answered 429: rate limited")
        if text.startswith("400") and "Consul Enterprise feature" in text:
            # Consul CE refuses any ns= or partition=, "default" included (agent/http_ce.go).
            return ConsulError("enterprise", f"{where} answered {_short(text)}: it is Consul CE; unset "
                                             "consul.namespace (CONSUL_NAMESPACE) and consul.partition "
                                             "(CONSUL_PARTITION)")
        return ConsulError("server_error", f"{where} answered {_short(text)}")
    if isinstance(exc, ValueError):
        return ConsulError("bad_answer", f"{where}: {_short(exc)}")
    return ConsulError("unexpected", f"{type(exc).__name__}: {_short(exc)}")


def _os_reason(error: object) -> str:
    """An OSError's reason without Python's ``[Errno 111]`` prefix (the operator reads the words)."""
    return str(error.strerror) if isinstance(error, OSError) and error.strerror else ""


def _short(value: object, limit: int = 200) -> str:
    """Consul errors can carry a whole answer body (megabytes); logs get the head of it."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit] + "..."


def next_index(last: int, returned: int) -> int:
    """The index for the next blocking query, by the rules in Consul's documentation.

    Going backwards (a snapshot restore, a new cluster) resets to 0: a fresh, non-blocking read.
    An index below 1 is never sent as is: 1 is used, so the next query still blocks.
    """
    if last > 0 and returned < last:
        return 0
    return max(returned, 1)


#: Longest wait of a non-blocking read at the watches' shared gate before it goes ahead anyway.
GATE_PATIENCE = 2.0


def parse_index(raw: object) -> int:
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        raise ConsulError("bad_answer", f"X-Consul-Index {str(raw)[:40]!r} is not an integer") from None


def backoff_delay(failures: int, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: spreads retries of many watches after a Consul blip."""
    ceiling = min(cap, BACKOFF_BASE * (2 ** min(failures - 1, 20)))
    return (rng or random).uniform(ceiling / 2, ceiling)


class RedirectRefused(Exception):
    """Consul (or whatever answers at its address) sent a 3xx; :func:`classify` makes it a "redirect"."""

    def __init__(self, address: str, status: int, location: str) -> None:
        super().__init__(f"{address} answered {status} redirect to {location}")
        self.address, self.status, self.location = address, status, location


def _shown_location(value: str | None) -> str:
    """A hostile Location header as log-safe text: printable ASCII only, and not too much of it."""
    if not value:
        return "(no Location header)"
    return _short("".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in value))


#: Set by Consul when ACLs removed part of an answer (and a token was sent; a token-less read is
#: filtered without it: see :func:`check_token`).
FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"
ACL_FILTERED = (f"Consul left part of the answer out by ACLs ({FILTERED_HEADER}): the token (consul.token, "
                "consul.token_file or CONSUL_HTTP_TOKEN) needs service:read on the service and node:read on its "
                "nodes")


class _HTTPClient(consul.aio.HTTPClient):
    """py-consul's aio client with the connection haproxy-sync's settings describe, and never a redirect.

    Its own constructor knows a host, a port and a CA file; Consul's conventions also have a unix socket
    (``unix:///path``), a CA directory (``CONSUL_CAPATH``), verification off (``CONSUL_HTTP_SSL_VERIFY``),
    a server name to verify against (``CONSUL_TLS_SERVER_NAME``), basic auth (``CONSUL_HTTP_AUTH``) and
    the Enterprise ``ns=``/``partition=`` on every request. Redirects are refused: aiohttp would follow
    one with every header, the X-Consul-Token among them, to wherever the answer points (aiohttp drops
    only ``Authorization`` on a cross-origin redirect).
    """

    def __init__(self, settings: ConsulSettings, connections_limit: int) -> None:  # no super(): see above
        unix = settings.address.startswith("unix://")
        url = settings.url
        consul.base.HTTPClient.__init__(self, url.hostname or "localhost", url.port or 80, url.scheme)
        # The address as configured (IPv6 keeps its brackets); a unix socket's requests name "localhost".
        self.base_uri = "http://localhost" if unix else settings.address
        self.address = settings.address  # for the messages: Consul at <address> (consul.address)
        self.loop = None
        self.server_hostname = settings.tls_server_name or None
        self.params = [(key, value) for key, value in (("ns", settings.namespace), ("partition", settings.partition))
                       if value]
        connector: aiohttp.BaseConnector
        if unix:
            connector = aiohttp.UnixConnector(path=settings.address[len("unix://"):], limit=connections_limit)
        else:
            connector = aiohttp.TCPConnector(limit=connections_limit, ssl=tls_context(settings))
        user, _, password = settings.auth.partition(":")
        auth = aiohttp.BasicAuth(user, password, encoding="latin-1") if settings.auth else None
        self._session = aiohttp.ClientSession(connector=connector, auth=auth)

    def uri(self, path: str, params: list[tuple[str, Any]] | None = None) -> str:
        """Every request's URL, with the Enterprise namespace and partition when they are set."""
        return super().uri(path, [*(params or []), *self.params] or None)

    async def _request(self, callback, method, uri, headers, data=None, connections_timeout=None, raw=False):  # type: ignore[no-untyped-def]
        extra = {"server_hostname": self.server_hostname} if self.server_hostname else {}
        # No total timeout here: blocking queries are bounded by the watch's own wait_for.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        resp = await self._session.request(
            method, uri, headers=headers, data=data, timeout=timeout, allow_redirects=False, **extra
        )
        if 300 <= resp.status < 400:
            resp.release()
            raise RedirectRefused(self.address, resp.status, _shown_location(resp.headers.get("Location")))
        if resp.headers.get(FILTERED_HEADER, "").lower() == "true":
            # Consul answers a read the token may not fully see with 200 and the part it may see: taken
            # as it is, the rest would look deregistered and empty backends and routes.
            resp.release()
            raise ConsulError("acl", ACL_FILTERED)
        body = await resp.read() if raw else await resp.text(encoding="utf-8", errors="replace")
        return callback(consul.base.Response(resp.status, resp.headers, body))


def tls_context(settings: ConsulSettings) -> ssl.SSLContext:
    """How Consul's certificate is verified (CA file and directory, or not at all) and the client
    certificate for mutual TLS; the system's CAs when neither CA setting is given."""
    context = ssl.create_default_context(cafile=settings.ca_file or None, capath=settings.ca_path or None)
    if not settings.ssl_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.cert_file:
        context.load_cert_chain(settings.cert_file, settings.key_file or None)
    return context


def make_client(settings: ConsulSettings) -> consul.aio.Consul:
    """One client (one connection pool) for all watches; call from inside the running event loop."""
    limit = settings.max_connections

    class _Client(consul.aio.Consul):
        def http_connect(self, host, port, scheme, verify=True, cert=None):  # type: ignore[no-untyped-def]
            # One blocking query holds one connection: aiohttp's default pool of 100 would queue the
            # 101st watch behind a query that may block for `wait`.
            return _HTTPClient(settings, limit)

    with warnings.catch_warnings():
        # py-consul hands aiohttp arguments it has deprecated; harmless, and not ours to fix.
        warnings.simplefilter("ignore", DeprecationWarning)
        client = _Client(host="localhost", port=8500, scheme="http", token=settings.token or None,
                         dc=settings.datacenter or None, verify=True)
    # py-consul reads CONSUL_HTTP_TOKEN itself, over the token it is given: the settings already
    # chose between the token, its file and the environment (a token file must win, as in Consul).
    client.token = settings.token or None
    return client


def address_of(client: consul.aio.Consul) -> str:
    """consul.address of a client :func:`make_client` made, for the messages that name it."""
    return str(getattr(client.http, "address", ""))


#: Consul's built-in anonymous token: what a request with no token runs as.
ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"


async def check_token(client: consul.aio.Consul, token_set: bool, deadline: float = 5.0) -> str:
    """At start, ask Consul who the token is (``/v1/acl/token/self``) and say so in one line when it
    cannot be right: unknown (every read fails with 403), or none at all with ACLs on (Consul then runs
    reads as the anonymous token and leaves out what it may not see, without telling: backends would
    look empty). ``token_set``: consul.token (or its file or CONSUL_HTTP_TOKEN) holds one.

    Consul answers 401 when ACLs are off, 404 "Supplied token does not exist" for an unknown secret or
    no token (403 "ACL not found" before 1.11). Runs beside the watches, never in their way: any other
    failure is a debug line. Returns the sentence it logged ("" for none), for the tests.
    """
    try:
        token = await asyncio.wait_for(client.acl.token.read_self(), deadline)
    except consul.ACLDisabled:
        return ""  # ACLs off: every read sees everything
    except consul.ACLPermissionDenied:
        token = None  # "ACL not found": Consul before 1.11
    except Exception as exc:  # a check, not a read the daemon needs: the watches report Consul's faults
        log.debug("consul: could not ask Consul who the ACL token is: %s",
                  classify(exc, "acl/token/self", address_of(client)))
        return ""
    if not isinstance(token, dict) and token_set:
        sentence = ("consul: Consul does not know the ACL token: every read will fail with 403 until consul.token, "
                    "consul.token_file or CONSUL_HTTP_TOKEN holds a token it knows")
        log.error("%s", sentence)
        return sentence
    if not isinstance(token, dict) or token.get("AccessorID") == ANONYMOUS_ACCESSOR:
        sentence = ("consul: no ACL token is set and Consul has ACLs on: reads run as the anonymous token, and "
                    "Consul leaves out what it may not see without a word; set consul.token (or token_file) to a "
                    "token with service:read and node:read")
        log.warning("%s", sentence)
        return sentence
    accessor = str(token.get("AccessorID", ""))
    policies = [str(p.get("Name", "?")) for p in token.get("Policies") or [] if isinstance(p, dict)]
    names = ",".join(policies)[:200] or "(none)"
    sentence = (f"consul: ACL token {accessor[:8]!a}... with policies {names!a} (Consul's words, escaped); an "
                "answer it may not fully see is an acl fault")
    log.info("%s", sentence)
    return sentence


@dataclass(frozen=True)
class WatchUpdate:
    """A changed service, as the apply loop receives it."""

    service: Service
    skipped: tuple[Skipped, ...]
    index: int
    seen_at: float  # monotonic time the answer arrived, for convergence latency


@dataclass
class WatchStatus:
    """What the watch knows about its own health; read by the daemon for logs, metrics and status."""

    healthy: bool = True
    fault: str = ""
    failures: int = 0
    last_index: int = 0
    #: When the data was last known current (monotonic): the last good answer, or the moment an agent
    #: that held a blocking query for it went away (until then it would have answered a change).
    current_at: float | None = None
    first_read: asyncio.Event = field(default_factory=asyncio.Event)

    def data_age(self, now: float) -> float | None:
        """How old the data may be: 0 while the blocking query is healthy (a change would have answered
        it), else the time since it was last known current; None before the first answer."""
        if self.current_at is None:
            return None
        return 0.0 if self.healthy else now - self.current_at


#: A blocking query that failed after this long was held by the agent until then (a restart dropped it;
#: the client's retry may then report the agent unreachable). Until the drop the agent would have
#: answered any change, so the data was current up to it. Our own deadline (a hung agent) is not that.
HELD_AT_LEAST = 1.0


class BlockingWatch(Generic[T]):
    """One blocking-query loop on one Consul endpoint: index rules, pacing, backoff, fault logging.

    Subclasses say what to read (:meth:`_fetch`) and how to turn the answer into a value
    (:meth:`_parse`); the loop hands each *changed* value to :meth:`_emit`.
    """

    def __init__(
        self,
        client: consul.aio.Consul,
        service: str,
        *,
        wait: float,
        backoff_max: float,
        on_error: Callable[[str, str], None] | None = None,
        start_delay: float = 0.0,
        gate: asyncio.Semaphore | None = None,
    ) -> None:
        self.client = client
        self.on_error = on_error
        self.service = service  # what the logs and metrics call this watch
        self.wait = wait
        self.backoff_max = backoff_max
        self.start_delay = start_delay
        self.gate = gate
        self.status = WatchStatus()
        self.noun = "instances"  # what a skipped item of this watch is, for the log
        self._last_value: T | None = None
        self._last_skipped: tuple[Skipped, ...] = ()
        self._fault_since = 0.0
        self._stalled = False
        self._backwards_at: float | None = None  # the last time the index went backwards

    @property
    def skipped(self) -> tuple[Skipped, ...]:
        """What the last good answer held that cannot reach the config (counted at scrape time)."""
        return self._last_skipped

    async def _fetch(self, index: int | None, wait: str) -> tuple[object, object]:
        raise NotImplementedError

    def _parse(self, raw: object) -> tuple[T, tuple[Skipped, ...]]:
        raise NotImplementedError

    def _emit(self, value: T, skipped: tuple[Skipped, ...], index: int) -> None:
        raise NotImplementedError

    def _empty(self, value: T) -> bool:
        """Whether a first answer holds nothing worth a word (a service with no instances)."""
        return False

    async def run(self) -> None:
        """Watch until cancelled; never raises for a Consul fault."""
        if self.start_delay > 0:
            await asyncio.sleep(self.start_delay)  # spreads the first reads of watches started together
        index = 0
        interval = MIN_REQUEST_INTERVAL
        last_start = 0.0
        while True:
            pause = interval - (time.monotonic() - last_start)
            if pause > 0:
                await asyncio.sleep(pause)
            last_start = time.monotonic()
            sent = index
            try:
                returned, value, skipped = await self._read_parsed(sent)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every fault becomes a classified, logged retry
                error = classify(exc, self.service, address_of(self.client))
                if sent and time.monotonic() - last_start >= HELD_AT_LEAST and error.kind != "timeout":
                    self.status.current_at = time.monotonic()  # held until the agent went away
                index = 0  # after an error, start again with a fresh read
                await asyncio.sleep(self._record_failure(error))
                continue
            self._record_success(returned)
            index = next_index(sent, returned)
            if 0 < returned < sent:
                self._went_backwards(sent, returned)
            interval = self._pace(sent, returned, time.monotonic() - last_start)
            self._offer(value, skipped, returned)

    def _went_backwards(self, sent: int, returned: int) -> None:
        """Logged once per episode: an index that keeps flapping (two servers answering in turn, a
        proxy mixing clusters) is one line, then debug, until it has been quiet for a minute."""
        now = time.monotonic()
        quiet = self._backwards_at is None or now - self._backwards_at > BACKWARDS_EPISODE
        self._backwards_at = now
        if quiet:
            log.info("consul watch service=%s index went backwards (%d -> %d): fresh read; further jumps within "
                     "%gs of each other are logged at debug", self.service, sent, returned, BACKWARDS_EPISODE,
                     extra=logs.event("consul.index_backwards", service=self.service))
        else:
            log.debug("consul watch service=%s index went backwards again (%d -> %d)", self.service, sent, returned)

    def _pace(self, sent: int, returned: int, took: float) -> float:
        """Consul's rule: rate-limit the loop, so an index that does not advance cannot spin the CPU.

        An answer to a blocking read that does not move the index past the one sent, and comes back
        long before ``wait`` ran out, means the server is not blocking (an index of 0, a proxy, a bug).
        """
        stalled = sent > 0 and returned <= sent and took < self.wait / 2
        if stalled and not self._stalled:
            log.warning("consul watch service=%s is not blocking (X-Consul-Index %d for index %d); "
                        "reading at most once every %gs until it does", self.service, returned, sent,
                        STALLED_INTERVAL, extra=logs.event("consul.not_blocking", service=self.service))
        elif self._stalled and not stalled and sent > 0:
            log.info("consul watch service=%s blocking again (X-Consul-Index %d)", self.service, returned)
        if sent > 0:
            self._stalled = stalled
        return STALLED_INTERVAL if self._stalled else MIN_REQUEST_INTERVAL

    async def _read_parsed(self, index: int) -> tuple[int, T, tuple[Skipped, ...]]:
        """Read and parse in a frame of its own: the raw answer must not live on in ``run``'s locals
        through the next blocking wait (1,000 watches would hold 1,000 decoded answers, ~40 MB).

        A read that does not block (the first one, or the first after an error) answers at once, so
        a cold start or the end of an outage sends one per watch together: ``gate`` bounds how many
        are in flight, which spares Consul the herd and the daemon a pile of undecoded answers. A
        watch waits at the gate for ``GATE_PATIENCE`` at most: when Consul answers slowly, queueing
        behind slow reads would hold the first apply back for far longer than the reads themselves.
        """
        if index != 0 or self.gate is None:
            return await self._read_parsed_now(index)
        try:
            await asyncio.wait_for(self.gate.acquire(), GATE_PATIENCE)
        except TimeoutError:
            return await self._read_parsed_now(index)
        try:
            return await self._read_parsed_now(index)
        finally:
            self.gate.release()

    async def _read_parsed_now(self, index: int) -> tuple[int, T, tuple[Skipped, ...]]:
        returned, raw = await self._read(index)
        value, skipped = self._parse(raw)
        return returned, value, skipped

    async def _read(self, index: int) -> tuple[int, object]:
        # Consul adds up to wait/16 of jitter; beyond that plus a margin, the answer is hung.
        margin = min(5.0, max(1.0, self.wait / 4))
        deadline = self.wait + self.wait / 16 + margin if index else 15.0
        raw_index, raw = await asyncio.wait_for(self._fetch(index or None, f"{self.wait:g}s"), timeout=deadline)
        return parse_index(raw_index), raw

    def _offer(self, value: T, skipped: tuple[Skipped, ...], index: int) -> None:
        if skipped != self._last_skipped:
            if skipped:
                log.warning("consul watch service=%s: %s", self.service,
                            skipped_summary(f"the answer's {self.noun}", skipped),
                            extra=logs.event("consul.skipped", service=self.service,
                                             instance=",".join(s.instance_id for s in skipped[:20]) or None))
            self._last_skipped = skipped
        first = not self.status.first_read.is_set()
        self.status.first_read.set()
        if first and not skipped and self._empty(value):
            log.warning("consul watch service=%s: the first answer lists no instances: not registered (yet), or "
                        "hidden by ACLs (Consul leaves out what a token may not see, and says so only when a "
                        "token was sent: set consul.token when ACLs are on); serving none until instances come",
                        self.service, extra=logs.event("consul.empty", service=self.service))
        if value == self._last_value and not first:
            log.debug("consul watch service=%s index=%d: no change that reaches the config", self.service, index)
            return
        self._last_value = value
        self._emit(value, skipped, index)

    def _record_success(self, index: int) -> None:
        status = self.status
        if not status.healthy:
            log.info(
                "consul watch service=%s recovered after %d errors in %.1fs (fault=%s)",
                self.service, status.failures, time.monotonic() - self._fault_since, status.fault,
                extra=logs.event("consul.recovered", service=self.service, kind=status.fault),
            )
        status.healthy, status.fault, status.failures = True, "", 0
        status.last_index = index
        status.current_at = time.monotonic()

    def _record_failure(self, error: ConsulError) -> float:
        status = self.status
        status.failures += 1
        if self.on_error is not None:
            self.on_error(self.service, error.kind)
        delay = backoff_delay(status.failures, self.backoff_max)
        if status.healthy or status.fault != error.kind:
            if status.healthy:
                self._fault_since = time.monotonic()
            log.warning(
                "consul watch service=%s failing fault=%s: %s; keeping last good data, retrying in %.1fs "
                "(then with backoff up to %gs)",
                self.service, error.kind, error, delay, self.backoff_max,
                extra=logs.event("consul.failing", service=self.service, kind=error.kind, delay_s=round(delay, 2),
                                 error=str(error)[:500]),
            )
        else:
            log.debug("consul watch service=%s retry %d in %.2fs fault=%s", self.service, status.failures,
                      delay, error.kind)
        status.healthy, status.fault = False, error.kind
        return delay


class ServiceWatch(BlockingWatch[Service]):
    """The instances of one Consul service (``/v1/health/service/<name>``), optionally by tag and filter."""

    def __init__(
        self,
        client: consul.aio.Consul,
        service: str,
        on_update: Callable[[WatchUpdate], None],
        *,
        tag: str = "",
        filter_expression: str = "",
        policy: rules.AddressPolicy = rules.STRICT,
        **options: Any,
    ) -> None:
        super().__init__(client, service, **options)
        self.on_update = on_update
        self.query = health_query(tag, filter_expression)
        self.policy = policy

    async def _fetch(self, index: int | None, wait: str) -> tuple[object, object]:
        return await self.client.health.service(
            self.service, index=str(index) if index else None, wait=wait, **self.query
        )

    def _parse(self, raw: object) -> tuple[Service, tuple[Skipped, ...]]:
        return parse_health_entries(self.service, documented(raw, self.service), self.policy)

    def _emit(self, value: Service, skipped: tuple[Skipped, ...], index: int) -> None:
        self.on_update(WatchUpdate(value, skipped, index, time.monotonic()))

    def _empty(self, value: Service) -> bool:
        return not value.instances


def documented(raw: object, what: str) -> object:
    """``raw`` if Consul answered a body at all; a 404 (py-consul gives None for it) or a JSON
    ``null`` is not "no instances": Consul answers ``[]`` for a service it does not know, so
    anything else is a fault of the read, and the last good data stays."""
    if raw is None:
        raise ConsulError("bad_answer", f"the answer for {what!r} was a 404 or null, not the documented list; "
                                        "keeping the last good data")
    return raw


def health_query(tag: str, filter_expression: str) -> dict[str, str]:
    """Extra parameters of a health read: only tagged instances of a discovered service, a filter."""
    query = {"tag": tag} if tag else {}
    if filter_expression:
        query["filter_expr"] = filter_expression
    return query


def parse_catalog_services(raw: object, tag: str) -> tuple[frozenset[str], tuple[Skipped, ...]]:
    """Names of the services carrying ``tag`` in a ``/v1/catalog/services`` answer ({name: [tags]}).

    An answer of another shape (not an object, a value that is not a list) is a ``ValueError``: a
    fault of the read, never "no services". A name that cannot be a backend name is skipped with a
    reason, like any unsafe Consul string.
    """
    if not isinstance(raw, dict):
        raise ValueError("catalog/services answer is not a JSON object")
    names: set[str] = set()
    skipped: list[Skipped] = []
    for name, tags in raw.items():
        if not isinstance(tags, list):
            raise ValueError(f"catalog/services answer gives service {str(name)[:80]!r} a {type(tags).__name__}, "
                             "not a list of tags")
        if tag not in tags:
            continue
        if not rules.is_name(name):
            skipped.append(Skipped(str(name)[:80], "*", "service name is not a safe backend name"))
            continue
        names.add(name)
    return frozenset(names), tuple(skipped)


class CatalogWatch(BlockingWatch[frozenset[str]]):
    """Which services ask to be routed: ``/v1/catalog/services``, kept to those with the discovery tag."""

    def __init__(
        self, client: consul.aio.Consul, tag: str, on_update: Callable[[frozenset[str], float], None], **options: Any
    ) -> None:
        super().__init__(client, "catalog", **options)
        self.noun = "tagged services"
        self.tag = tag
        self.on_update = on_update

    async def _fetch(self, index: int | None, wait: str) -> tuple[object, object]:
        return await self.client.catalog.services(index=str(index) if index else None, wait=wait)

    def _parse(self, raw: object) -> tuple[frozenset[str], tuple[Skipped, ...]]:
        return parse_catalog_services(documented(raw, "catalog"), self.tag)

    def _emit(self, value: frozenset[str], skipped: tuple[Skipped, ...], index: int) -> None:
        self.on_update(value, time.monotonic())


async def _read_services(
    client: consul.aio.Consul, services: Iterable[str], deadline: float, queries: Mapping[str, Mapping[str, str]],
    policy: rules.AddressPolicy,
) -> dict[str, tuple[Service, tuple[Skipped, ...]]]:
    limit = asyncio.Semaphore(32)  # hundreds of services: a bounded number of reads at a time

    async def one(name: str) -> tuple[str, tuple[Service, tuple[Skipped, ...]]]:
        async with limit:
            try:
                _, entries = await asyncio.wait_for(client.health.service(name, **queries.get(name, {})), deadline)
                return name, parse_health_entries(name, documented(entries, name), policy)
            except Exception as exc:
                raise classify(exc, name, address_of(client)) from None

    return dict(await asyncio.gather(*(one(name) for name in services)))


@dataclass(frozen=True)
class CatalogRead:
    """One read of everything routed: configured services, and the discovered ones with their tag."""

    services: dict[str, tuple[Service, tuple[Skipped, ...]]]
    discovered: frozenset[str]


async def read_tagged_services(
    client: consul.aio.Consul, tag: str, deadline: float
) -> tuple[frozenset[str], tuple[Skipped, ...]]:
    """One non-blocking read of the services carrying ``tag``; raises :class:`ConsulError`."""
    try:
        _, raw = await asyncio.wait_for(client.catalog.services(), deadline)
        return parse_catalog_services(documented(raw, "catalog"), tag)
    except Exception as exc:
        raise classify(exc, "catalog", address_of(client)) from None


async def read_routed(settings: Settings, deadline: float = 15.0) -> CatalogRead:
    """What ``render``, ``status`` and ``run --once`` route: one non-blocking read; raises ConsulError."""
    client = make_client(settings.consul)
    try:
        discovered: frozenset[str] = frozenset()
        if settings.discovery.enabled:
            discovered, skipped = await read_tagged_services(client, settings.discovery.tag, deadline)
            if skipped:
                log.warning("discovery: %s", skipped_summary("the tagged services", skipped))
        queries = service_queries(settings, discovered)
        services = await _read_services(client, list(queries), deadline, queries, settings.address_policy)
        return CatalogRead(services, discovered)
    finally:
        await client.close()


def service_queries(settings: Settings, discovered: Iterable[str]) -> dict[str, dict[str, str]]:
    """Every service to watch and its query: configured ones with their filter, discovered ones by tag."""
    queries = {s.name: health_query("", s.filter) for s in settings.services}
    for name in sorted(set(discovered) - queries.keys()):
        queries[name] = health_query(settings.discovery.tag, settings.discovery.filter)
    return queries
