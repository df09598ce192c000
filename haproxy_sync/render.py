"""Pure rendering: (slot tables, settings, template) -> haproxy.cfg text.

Rendering is deterministic (the same slot tables give the same bytes), so the daemon can tell "nothing
changed" by comparing text and skip both the write and the reload. The template sees only validated
values from :mod:`haproxy_sync.catalog` and settings; Jinja2 runs with ``StrictUndefined`` so that a
typo in a template is an error naming the file and line instead of an empty string in the config.
"""

from __future__ import annotations

import dataclasses
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from haproxy_sync import __version__, rules
from haproxy_sync.config import ServiceSettings, Settings, TlsSettings
from haproxy_sync.haproxy import Features
from haproxy_sync.plan import BackendSlots, Slot
from haproxy_sync.routing import CanaryBackend, Routing


class TemplateError(Exception):
    """A template that cannot be loaded or rendered; the message starts with ``file:line:``."""


@dataclass(frozen=True)
class ServerView:
    """What a template needs of one server slot; ``state`` is ``enabled``, ``drain`` or ``disabled``.

    Consul's IDs and node names may hold anything, so the template never sees them raw:
    ``instance_id`` and ``node`` are their safe labels (:func:`haproxy_sync.rules.label`).
    """

    name: str
    address: str
    port: int
    weight: int
    state: str
    instance_id: str  # the instance's label; empty for a free slot
    node: str
    label: str  # the label of the server name: ``free`` for a free slot

    @property
    def endpoint(self) -> str:
        """``address:port`` as HAProxy parses it: IPv6 addresses in brackets."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @classmethod
    def of(cls, slot: Slot) -> ServerView:
        if slot.owner is None:
            return cls(slot.name, slot.address, slot.port, slot.weight, slot.state, "", "", "free")
        node, instance_id = slot.owner
        return cls(slot.name, slot.address, slot.port, slot.weight, slot.state, rules.label(instance_id, node),
                   rules.label(node), rules.label(instance_id, node))


@dataclass(frozen=True)
class BackendView:
    name: str
    service: str
    balance: str
    health_path: str
    host: str
    path: str
    discovered: bool
    servers: tuple[ServerView, ...]
    canary_of: str = ""  # a canary backend: the backend whose canaries it serves (the canary header's)
    https_redirect: bool = False  # plain HTTP requests for it are redirected to HTTPS

    @property
    def route(self) -> str:
        """Where requests come from, for comments: ``host/path``, ``*/path``, or "" (no route)."""
        if not (self.host or self.path):
            return ""
        return f"{self.host or '*'}{self.path or '/'}"

    @property
    def up_count(self) -> int:
        return sum(1 for s in self.servers if s.state == "enabled")

    @property
    def instance_count(self) -> int:
        return sum(1 for s in self.servers if s.instance_id)


def backend_views(
    tables: Mapping[str, BackendSlots], services: tuple[ServiceSettings, ...],
    canary_backends: tuple[CanaryBackend, ...] = (), tls: TlsSettings | None = None,
) -> tuple[BackendView, ...]:
    """The services' backends in order, then the canary backends (routed by the canary header only)."""
    tls = tls or TlsSettings()
    views = tuple(
        BackendView(
            name=svc.backend,
            service=svc.name,
            balance=svc.balance,
            health_path=svc.health_path,
            host=svc.host,
            path=svc.path,
            discovered=svc.discovered,
            servers=tuple(ServerView.of(slot) for slot in tables[svc.backend].slots),
            https_redirect=tls.enabled and (tls.https_redirect if svc.https_redirect is None else svc.https_redirect),
        )
        for svc in services
    )
    by_name = {view.name: view for view in views}
    return views + tuple(
        dataclasses.replace(by_name[canary.parent], name=canary.name, host="", path="", canary_of=canary.parent,
                            servers=tuple(ServerView.of(slot) for slot in tables[canary.name].slots))
        for canary in canary_backends
    )


def tls_view(tls: TlsSettings) -> dict[str, Any]:
    """The ``[tls]`` settings as a template prints them (paths as text, durations as whole seconds)."""
    return {
        "enabled": tls.enabled, "bind": tls.bind, "crt_list": str(tls.crt_list), "alpn": tls.alpn,
        "min_version": tls.min_version, "ciphers": tls.ciphers, "ciphersuites": tls.ciphersuites,
        "hsts": tls.hsts, "hsts_max_age": int(tls.hsts_max_age),
    }


def rebind_spelling(path: Path) -> str:
    """``path`` spelled so that HAProxy binds it afresh at a reload.

    At a reload the new worker takes over the old worker's listening sockets, matched by the path as
    written; a socket file someone deleted is then never bound again. The same path spelled another
    way (``/run/haproxy/./admin.sock``) matches no inherited socket, so HAProxy binds a new one there.
    """
    return f"{path.parent}/./{path.name}"


def template_context(
    tables: Mapping[str, BackendSlots], settings: Settings, routing: Routing, features: Features,
    rebind_socket: bool = False,
) -> dict[str, Any]:
    hap = settings.haproxy
    return {
        "features": features,
        "stats_file": str(hap.stats_file_path),
        "backends": backend_views(tables, routing.services, routing.canary_backends, settings.tls),
        "tls": tls_view(settings.tls),
        "routes": routing.routes,
        "routes_map": str(hap.routes_map_path),
        "haproxy": hap,
        "stats_socket": rebind_spelling(hap.stats_socket) if rebind_socket else str(hap.stats_socket),
        "server_state_file": str(hap.server_state_file),
        "version": __version__,
    }


def _printable(value: object) -> object:
    """Every value a template prints: checked, a number, or one line of printable ASCII (rules.config_text).

    An undefined name is left to StrictUndefined, whose error names it.
    """
    return value if isinstance(value, jinja2.Undefined) else rules.config_text(value)


def load_template(path: Path) -> jinja2.Template:
    """Compile the template at ``path``; syntax errors become :class:`TemplateError` with file:line."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(path.parent)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # the output is haproxy.cfg, not HTML
        finalize=_printable,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    try:
        return env.get_template(path.name)
    except jinja2.TemplateNotFound:
        raise TemplateError(f"{path}: template not found") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.filename or path}:{exc.lineno}: syntax error: {exc.message}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{path}: cannot read template: {exc}") from None


def render(
    tables: Mapping[str, BackendSlots], settings: Settings, template: jinja2.Template, routing: Routing,
    features: Features, rebind_socket: bool = False,
) -> str:
    """Render the config text; any error inside the template is reported with its file and line.

    ``routing`` and ``features`` (what the HAProxy binary can do) are decided once per apply by the
    caller (``pipeline.prepare``), never guessed here. ``rebind_socket``: the admin socket was deleted,
    spell its path so that the next reload binds it again (:func:`rebind_spelling`).
    """
    try:
        return template.render(template_context(tables, settings, routing, features, rebind_socket))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.filename}:{exc.lineno}: syntax error: {exc.message}") from None
    except Exception as exc:  # a template may raise anything from a filter or a method it calls
        where = _template_frame(exc, template.filename or "<template>")
        raise TemplateError(f"{where}: {type(exc).__name__}: {exc}") from None


_SECTION_LINE = re.compile(r"^(\S+)(?:\s+(\S+))?")
_SLOT_LINE = re.compile(r"^\s+server\s+(slot\d+)\s+\S+(.*)$")
_WEIGHT_WORD = re.compile(r"\bweight\s+(\d+)")


def contract_problem(text: str, tables: Mapping[str, BackendSlots], routes_map: str) -> str | None:
    """What ``text`` lacks that the daemon changes at runtime, or None: a ``backend`` section per
    backend, a ``server slotN`` line per slot with its weight and, for a slot in maintenance,
    ``disabled``, and a map converter loading ``routes_map``.

    Without these HAProxy accepts the config, and then lacks what the Runtime API addresses: every
    change falls back to a reload, every reconcile reloads again, and ``show map`` fails.
    """
    lines: dict[str, dict[str, str]] = {}
    current: str | None = None
    map_loaded = re.compile(rf"\bmap(?:_[a-z]+)?\({re.escape(routes_map)}[,)]")
    has_map = False
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        if not code.strip():
            continue
        if not code[:1].isspace():
            words = _SECTION_LINE.match(code)
            current = words.group(2) if words and words.group(1) == "backend" else None
            if current is not None:
                lines.setdefault(current, {})
        elif current is not None and (match := _SLOT_LINE.match(code)):
            lines[current][match.group(1)] = match.group(2)
        has_map = has_map or bool(map_loaded.search(code))
    each = "render `server {{ server.name }} ...` for each of `backend.servers`"
    for backend, table in tables.items():
        if backend not in lines:
            return f"no `backend {backend}` section (render one for each of `backends`)"
        for slot in table.slots:
            rest = lines[backend].get(slot.name)
            if rest is None:
                return f"backend {backend} has no `server {slot.name}` line ({each})"
            weight = _WEIGHT_WORD.search(rest)
            if (int(weight.group(1)) if weight else 1) != slot.weight:
                return f"backend {backend}: `server {slot.name}` lacks `weight {{{{ server.weight }}}}`"
            disabled = " disabled" in f" {rest}"
            if disabled != slot.maint:
                return (f"backend {backend}: `server {slot.name}` " + ("is `disabled` while in rotation" if disabled
                        else 'lacks `disabled` (needed when `server.state` is "disabled": free slots)'))
    if not has_map:
        return f"no map converter loads the routes map {routes_map} (`map_str({{{{ routes_map }}}})`)"
    return None


def _template_frame(exc: BaseException, filename: str) -> str:
    """Jinja2 rewrites tracebacks so that template frames carry the template's file and line."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return f"{filename}:{line}" if line is not None else filename
