"""Growing a backend without a reload: the slots a backend outgrows are added with ``add server``.

A backend's slot table doubles when its free slots run out (see :mod:`haproxy_sync.plan`). The new
slots are rendered into ``haproxy.cfg`` like any other (so a restart or a later reload runs the same
servers), and HAProxy gets them at runtime as dynamic servers, with the options the rendered config
gives them: ``add server`` with the ``default-server`` options of the defaults section and of the
backend, then the server line's own, always first in maintenance; then ``enable health`` (dynamic
servers start with their checks off) and, for a slot that takes traffic, ``state ready``.

What HAProxy refuses for dynamic servers, checked on 2.6.12 and 3.0.11 (tests/integration/test_growth.py):

* the balance algorithms ``static-rr``, ``source`` and ``uri`` ("Backend must use a dynamic load
  balancing to support dynamic servers"): such a backend grows by a reload, and the reason says so;
* ``init-addr`` ("not accepted for dynamic server"): dropped, since a runtime slot always has an IP;
* any option not in :data:`DYNAMIC_OPTIONS`: not tried; the backend grows by a reload, naming it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from haproxy_sync import commands, rules
from haproxy_sync.commands import Command
from haproxy_sync.reasons import ReloadKind, ReloadReason

#: Balance algorithms under which HAProxy 2.6 and 3.0 accept ``add server``.
DYNAMIC_BALANCE = frozenset({"roundrobin", "leastconn", "first", "random"})
#: Server options passed on to ``add server`` as they are, with the number of arguments each takes.
DYNAMIC_OPTIONS = {"check": 0, "inter": 1, "fastinter": 1, "downinter": 1, "fall": 1, "rise": 1, "maxconn": 1,
                   "minconn": 1, "maxqueue": 1, "slowstart": 1}
#: Options of a server line that haproxy-sync sets itself on a dynamic server, or that do not apply.
_OWN_OPTIONS = {"weight": 1, "disabled": 0, "enabled": 0, "init-addr": 1, "guid": 1}
_ARGUMENT = re.compile(r"[0-9]{1,9}(?:ms|s|m|h|d|us)?", re.ASCII)


class SlotLike(Protocol):
    """What growing needs of a :class:`haproxy_sync.plan.Slot` (plan imports this module, not the reverse)."""

    @property
    def name(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def weight(self) -> int: ...
    @property
    def maint(self) -> bool: ...


@dataclass
class BackendShape:
    """What the rendered config says of one backend, as far as new servers need it."""

    balance: str = "roundrobin"
    default_options: list[str] = field(default_factory=list)
    servers: dict[str, list[str]] = field(default_factory=dict)  # server name -> options after the endpoint


#: Balance algorithms that take only 0 % and 100 % of a server's configured weight at runtime (HAProxy:
#: "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'").
STATIC_BALANCE = frozenset({"static-rr", "source", "uri"})


@functools.lru_cache(maxsize=4)
def shapes(text: str) -> dict[str, BackendShape]:
    """Each backend's balance, ``default-server`` options (the defaults section's first) and server options.

    Cached: one plan asks it of the same rendered text for every backend that changes.
    """
    found: dict[str, BackendShape] = {}
    defaults: list[str] = []
    section, current = "", None
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if not raw[:1].isspace():
            section, current = words[0], None
            if section == "defaults":
                defaults = []
            elif section == "backend" and len(words) > 1:
                current = found.setdefault(words[1], BackendShape(default_options=list(defaults)))
            continue
        if words[0] == "default-server" and section == "defaults":
            defaults += words[1:]
        elif current is not None and words[0] == "default-server":
            current.default_options += words[1:]
        elif current is not None and words[0] == "balance" and len(words) > 1:
            current.balance = words[1]
        elif current is not None and words[0] == "server" and len(words) > 2:
            current.servers[words[1]] = words[3:]
    return found


def dynamic_options(options: Sequence[str]) -> list[str] | str:
    """The options to give ``add server``, or the reason HAProxy could not take them at runtime."""
    kept: list[str] = []
    words = list(options)
    while words:
        word = words.pop(0)
        arity = DYNAMIC_OPTIONS.get(word, _OWN_OPTIONS.get(word))
        if arity is None:
            return f"server option {word!r} is not one haproxy-sync passes to dynamic servers"
        arguments, words = words[:arity], words[arity:]
        if len(arguments) != arity or (word not in ("init-addr", "guid")
                                       and not all(_ARGUMENT.fullmatch(a) for a in arguments)):
            return f"server option {word!r} {' '.join(arguments)!r} is not one haproxy-sync passes to dynamic servers"
        if word in DYNAMIC_OPTIONS:
            kept += [word, *arguments]
    return kept


def _guid(line: Sequence[str]) -> str:
    """The ``guid`` a server line gives its slot ("" for none): the dynamic server gets the same one."""
    return next((line[i + 1] for i, word in enumerate(line[:-1]) if word == "guid"), "")


def grow(backend: str, slots: Sequence[SlotLike], running: int, text: str) -> list[Command] | ReloadReason:
    """Commands that give HAProxy the slots of ``backend`` beyond the ``running`` first ones, or the reason
    they must come by a reload instead."""
    no_dynamic = ReloadKind.SLOTS_NO_DYNAMIC
    shape = shapes(text).get(backend)
    if shape is None:
        return ReloadReason(ReloadKind.SLOTS, f"backend {backend} is not in the rendered config")
    if shape.balance not in DYNAMIC_BALANCE:
        return ReloadReason(no_dynamic, f"balance {shape.balance} takes no dynamic servers")
    sequence: list[Command] = []
    for slot in slots[running:]:
        name, address = slot.name, slot.address
        line = shape.servers.get(name)
        if line is None:
            return ReloadReason(ReloadKind.SLOTS, f"{backend}/{name} is not in the rendered config")
        if not rules.is_ip(address):
            return ReloadReason(ReloadKind.HOSTNAME, f"{backend}/{name} address {address} is a host name")
        options = dynamic_options([*shape.default_options, *line])
        if isinstance(options, str):
            return ReloadReason(no_dynamic, options)
        guid = _guid(line)
        if guid and not rules.is_guid(guid):
            return ReloadReason(no_dynamic, f"{backend}/{name} guid {guid[:40]!r} is not one HAProxy takes")
        sequence.append(commands.add_server(backend, name, address, slot.port, tuple(options), slot.weight, guid))
        if "check" in options:
            sequence.append(commands.enable_health(backend, name))
        if not slot.maint:
            sequence.append(commands.set_server_state(backend, name, commands.ServerState.READY))
    return sequence
