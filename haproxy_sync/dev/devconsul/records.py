"""What every part of devconsul shares: constants, Go durations and quoting, the log line, the records."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any, Final

_log: Final = logging.getLogger("haproxy_sync.devconsul")

CONSUL_VERSION: Final = "1.17.0"
PASSING: Final = "passing"
WARNING: Final = "warning"
CRITICAL: Final = "critical"
_STATUSES: Final = (PASSING, WARNING, CRITICAL)

_DEFAULT_CHECK_TIMEOUT: Final = 10.0

SERF_CHECK_ID: Final = "serfHealth"
NODE_MAINT_CHECK_ID: Final = "_node_maintenance"
SERVICE_MAINT_PREFIX: Final = "_service_maintenance:"


# Go durations (Consul's wait, Interval, Timeout, TTL): the package's one implementation.


def _parse_go_bool(text: str) -> bool:
    """Go's strconv.ParseBool, which Consul uses for ?enable= and ?passing=."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(text)


def _go_quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _kv(**fields: object) -> str:
    """Format log fields as key=value, quoting values with spaces, so each event is one greppable line."""
    parts = []
    for key, value in fields.items():
        text = str(value)
        if text == "" or any(ch.isspace() for ch in text) or '"' in text or "=" in text:
            text = _go_quote(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)


# --------------------------------------------------------------------------------------------------
# Immutable records. Updates replace them (dataclasses.replace), so a check runner can compare the
# definition it was started with to the current one, and "did this write change anything" is `==`.


@dataclass(frozen=True)
class CheckDefinition:
    """How a check is run: "http", "tcp", "ttl", or the passive kinds "maintenance", "serf", "alias", and
    "catalog" for a check registered through /v1/catalog/register, which nothing runs (its ``type_name``
    is the Type Consul shows for it)."""

    kind: str
    http: str = ""
    method: str = ""
    header: tuple[tuple[str, tuple[str, ...]], ...] = ()
    body: str = ""
    tcp: str = ""
    tls_skip_verify: bool = False
    interval: float = 0.0
    timeout: float = 0.0
    ttl: float = 0.0
    deregister_critical_after: float = 0.0
    type_name: str = ""


@dataclass(frozen=True)
class Check:
    """One health check as the catalog holds it (node-level when service_id is empty); ``node`` is the
    name of its node, set by the store."""

    check_id: str
    name: str
    status: str
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: tuple[str, ...] = ()
    definition: CheckDefinition = CheckDefinition("")
    node: str = ""
    create_index: int = 0
    modify_index: int = 0


@dataclass(frozen=True)
class TaggedAddress:
    """A service's extra address ("lan_ipv4", "wan", ...), as Consul's ServiceAddress."""

    tag: str
    address: str
    port: int


@dataclass(frozen=True)
class Service:
    """One service instance. `local` is False for what the agent does not own: the built-in "consul"
    service and anything registered through /v1/catalog/register. ``node`` is its node's name (the store
    sets it)."""

    service_id: str
    name: str
    tags: tuple[str, ...] = ()
    address: str = ""
    port: int = 0
    meta: tuple[tuple[str, str], ...] | None = None
    weights: tuple[int, int] = (1, 1)
    enable_tag_override: bool = False
    tagged_addresses: tuple[TaggedAddress, ...] = ()
    kind: str = ""
    local: bool = True
    node: str = ""
    create_index: int = 0
    modify_index: int = 0


Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Node:
    """A node of the catalog: the agent's own, or an external one registered through /v1/catalog/register.

    ``tagged_addresses`` and ``meta`` are None where Consul has a nil map (an external node registered
    without them: JSON null), so that "given empty" and "not given" stay apart as in Consul's ChangesNode.
    """

    node_id: str
    name: str
    address: str
    datacenter: str
    tagged_addresses: Pairs | None = None
    meta: Pairs | None = None
    create_index: int = 1
    modify_index: int = 1


def agent_node(name: str, node_id: str, address: str, datacenter: str) -> Node:
    """The agent's own node as a Consul agent registers it: lan/wan tagged addresses, the network segment."""
    tagged = (("lan", address), ("lan_ipv4", address), ("wan", address), ("wan_ipv4", address))
    return Node(node_id, name, address, datacenter, tagged, (("consul-network-segment", ""),))


@dataclass(frozen=True)
class KVEntry:
    """One key of the KV store (Consul's DirEntry); ``value`` None is Consul's nil value (JSON null)."""

    key: str
    value: bytes | None
    flags: int = 0
    create_index: int = 0
    modify_index: int = 0


@dataclass(frozen=True)
class CheckRegistration:
    """A decoded check definition from a register call, before IDs and state are assigned."""

    check_id: str
    name: str
    notes: str
    status: str
    definition: CheckDefinition
    service_id: str = ""


@dataclass(frozen=True)
class ServiceRegistration:
    """A decoded /v1/agent/service/register body."""

    service: Service
    checks: tuple[CheckRegistration, ...]


def _unindexed(record: Any) -> Any:
    return replace(record, create_index=0, modify_index=0)
