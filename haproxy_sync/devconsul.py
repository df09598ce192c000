"""devconsul: an in-process Consul HTTP API for the sandbox, the tests and the benchmarks.

Why it exists: no Consul binary can run on the machines this project is built and tested on, yet
haproxy-sync's whole job is to follow Consul. devconsul is a real HTTP server on a real port that
holds an in-memory catalog for one agent that is also its only node (a ``consul agent -dev`` stand-in).

It is written from Consul's documented HTTP API (agent/service, agent/check, health, catalog,
status, blocking queries), not from what our client happens to need, so that

* the tests catch our client's mistakes: an empty ``Service.Address``, a ``null`` ``Meta``, an index
  that moves while the data does not (check output), an index that goes backwards or is 0, 403 /
  429 / 500 answers, connections that are refused or reset; and
* the clients people already use (py-consul, consul-template, Ansible's consul modules, curl
  recipes from Consul's docs) work against it as they would against a real agent.

The parts, top to bottom: Go durations; the immutable records (services, checks, faults); decoding
of registration bodies (Consul accepts any key casing and snake_case); the JSON shapes Consul
answers with; a small ``filter`` expression evaluator (a go-bexpr subset); the state store with its
raft-like modify indexes; the server (routes, blocking queries, checks it really runs, faults);
a thread wrapper for synchronous callers; ``run_forever`` for the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hmac
import ipaddress
import json
import logging
import os
import random
import re
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, NoReturn

import aiohttp
from aiohttp import web

__all__ = [
    "CRITICAL",
    "FAULTS",
    "PASSING",
    "WARNING",
    "DevConsul",
    "DevConsulThread",
    "format_go_duration",
    "parse_go_duration",
    "run_forever",
]

_log: Final = logging.getLogger("haproxy_sync.devconsul")

CONSUL_VERSION: Final = "1.17.0"
PASSING: Final = "passing"
WARNING: Final = "warning"
CRITICAL: Final = "critical"
_STATUSES: Final = (PASSING, WARNING, CRITICAL)

DEFAULT_WAIT: Final = 300.0  # Consul holds a blocking query 5 minutes when no wait is given
MAX_WAIT: Final = 600.0  # ... and never longer than 10 minutes
_JITTER_FRACTION: Final = 16  # Consul adds up to wait/16 so that many waiters do not wake together
_DEFAULT_CHECK_TIMEOUT: Final = 10.0
_OUTPUT_MAX: Final = 4096  # Consul's default OutputMaxSize

SERF_CHECK_ID: Final = "serfHealth"
NODE_MAINT_CHECK_ID: Final = "_node_maintenance"
SERVICE_MAINT_PREFIX: Final = "_service_maintenance:"
_NODE_MAINT_REASON: Final = (
    "Maintenance mode is enabled for this node, but no reason was provided. This is a default message."
)
_SERVICE_MAINT_REASON: Final = (
    "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
)
_SCRIPTS_DISABLED: Final = (
    "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or "
    "'enable_local_script_checks' to true"
)
_FAULTED_PREFIXES: Final = ("/v1/health/", "/v1/catalog/", "/v1/status/")
_CONTROL_PREFIX: Final = "/v1/devconsul/"


# --------------------------------------------------------------------------------------------------
# Go durations: Consul's wait, Interval, Timeout, TTL are all written like "100ms" or "1m30s".

_DURATION_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # Go accepts the micro sign
    "μs": 1e-6,  # ... and the Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART: Final = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_BARE_NUMBER: Final = re.compile(r"\d+\.?\d*|\.\d+")


def parse_go_duration(text: str) -> float:
    """Return the seconds in a Go duration string, raising ValueError with Go's own message."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text[1:] if text[:1] in ("+", "-") else text
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    total, pos = 0.0, 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            if _BARE_NUMBER.fullmatch(body, pos):
                raise ValueError(f'time: missing unit in duration "{text}"')
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def _trim_float(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


def format_go_duration(seconds: float) -> str:
    """Write seconds the way Go's time.Duration.String() does ("10s", "100ms", "1m30s")."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign, ns = ("-" if ns < 0 else ""), abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_trim_float(ns / 1e3)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_trim_float(ns / 1e6)}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    return f"{sign}{text}{_trim_float(rest / 1e9)}s"


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
    """How a check is run: "http", "tcp", "ttl", or the passive kinds "maintenance", "serf", "alias"."""

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


@dataclass(frozen=True)
class Check:
    """One health check as the catalog holds it (node-level when service_id is empty)."""

    check_id: str
    name: str
    status: str
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: tuple[str, ...] = ()
    definition: CheckDefinition = CheckDefinition("")
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
    """One service instance. `local` is False for the built-in "consul" service the agent does not own."""

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
    create_index: int = 0
    modify_index: int = 0


@dataclass(frozen=True)
class Node:
    """The single node this agent is."""

    node_id: str
    name: str
    address: str
    datacenter: str
    create_index: int = 1
    modify_index: int = 1


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


# --------------------------------------------------------------------------------------------------
# Faults: what can go wrong with a real Consul, on demand, so the client's handling can be tested.


@dataclass(frozen=True)
class Fault:
    """The active fault. `name` is "" when none is active."""

    name: str = ""
    delay: float = 0.0
    size_mb: float = 0.0
    offset: int = 0


FAULTS: Final = {
    "refuse": "stop listening: connections are refused; listening resumes on the same port when cleared",
    "reset": "abort every connection (TCP RST) without an answer, pending blocking queries included",
    "no_leader": 'reads answer 500 "No cluster leader"',
    "forbidden": 'reads answer 403 "Permission denied"',
    "rate_limited": 'reads answer 429 "rate limit exceeded"',
    "slow": "reads wait `delay` seconds (default 1) before being answered",
    "index_backwards": "reads report max(1, index - `offset`); default offset: the highest index reported",
    "index_zero": "reads report X-Consul-Index: 0",
    "malformed_json": "reads answer 200 with the first half of the JSON body",
    "huge": "reads answer the normal JSON followed by `size_mb` MiB (default 10) of whitespace",
    "foreign_service": 'health reads answer entries whose Service.Service is "intruder" (a hostile or broken Consul)',
}
_FAULT_PARAMS: Final = {"slow": ("delay",), "huge": ("size_mb",), "index_backwards": ("offset",)}
_ERROR_FAULTS: Final = {
    "no_leader": (500, "No cluster leader"),
    "forbidden": (403, "Permission denied"),
    "rate_limited": (429, "rate limit exceeded"),
}
_NO_FAULT: Final = Fault()


def _positive_number(name: str, value: Any, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"fault parameter {name} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"fault parameter {name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def make_fault(name: str, params: Mapping[str, Any], highest_reported: int) -> Fault:
    """Validate a fault request; `highest_reported` gives index_backwards its default offset."""
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULTS))}")
    unknown = set(params) - set(_FAULT_PARAMS.get(name, ()))
    if unknown:
        raise ValueError(f"fault {name} takes no parameter(s) {', '.join(sorted(unknown))}")
    if name == "slow":
        return Fault(name, delay=_positive_number("delay", params.get("delay", 1.0), allow_zero=True))
    if name == "huge":
        return Fault(name, size_mb=_positive_number("size_mb", params.get("size_mb", 10.0), allow_zero=False))
    if name == "index_backwards":
        offset = params.get("offset", max(1, highest_reported))
        return Fault(name, offset=int(_positive_number("offset", offset, allow_zero=False)))
    return Fault(name)


# --------------------------------------------------------------------------------------------------
# Decoding register bodies. Go's JSON decoder matches keys case-insensitively and Consul also
# translates snake_case, so py-consul's {"name": ..., "enable_tag_override": ...} is as valid as
# the docs' {"Name": ...}. Wrong types give Go's error text.


class ConsulHTTPError(Exception):
    """An answer Consul gives as a status code with a plain-text body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _bad_request(message: str) -> ConsulHTTPError:
    return ConsulHTTPError(400, message)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {json.dumps(value)}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_error(value: Any, struct_field: str, go_type: str) -> ConsulHTTPError:
    return _bad_request(
        f"Request decode failed: json: cannot unmarshal {_json_type(value)} into Go struct field "
        f"{struct_field} of type {go_type}"
    )


def _normalized(raw: Any, go_type: str) -> dict[str, Any]:
    """Lower-case keys without underscores, the way Go + Consul's key translation match them."""
    if not isinstance(raw, dict):
        raise _bad_request(
            f"Request decode failed: json: cannot unmarshal {_json_type(raw)} into Go value of type {go_type}"
        )
    return {key.replace("_", "").replace("-", "").lower(): value for key, value in raw.items()}


def _str(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _type_error(value, where, "string")
    return value


def _int(data: Mapping[str, Any], key: str, where: str) -> int:
    value = data.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(value, where, "int")
    return value


def _bool(data: Mapping[str, Any], key: str, where: str) -> bool:
    value = data.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _type_error(value, where, "bool")
    return value


def _str_list(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _type_error(value, where, "[]string")
    return tuple(value)


def _str_map(data: Mapping[str, Any], key: str, where: str) -> tuple[tuple[str, str], ...] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
        raise _type_error(value, where, "map[string]string")
    return tuple(value.items())


def _duration(data: Mapping[str, Any], key: str, where: str) -> float:
    """A duration as a Go string ("10s") or, as Consul also accepts, a number of nanoseconds."""
    value = data.get(key)
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool):
        raise _type_error(value, where, "time.Duration")
    if isinstance(value, int | float):
        return value / 1e9
    if not isinstance(value, str):
        raise _type_error(value, where, "time.Duration")
    try:
        return parse_go_duration(value)
    except ValueError as exc:
        raise _bad_request(f"Request decode failed: {exc}") from None


def _header(data: Mapping[str, Any], where: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    value = data.get("header")
    if value is None:
        return ()
    valid = isinstance(value, dict) and all(
        isinstance(items, list) and all(isinstance(item, str) for item in items) for items in value.values()
    )
    if not valid:
        raise _type_error(value, where, "map[string][]string")
    return tuple((name, tuple(items)) for name, items in value.items())


def _is_unspecified_address(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_unspecified
    except ValueError:
        return False


def _is_empty_check(data: Mapping[str, Any]) -> bool:
    return not any(value not in (None, "", 0, False, [], {}) for value in data.values())


_INTERVAL_KINDS: Final = ("script", "http", "tcp", "grpc", "h2ping", "udp", "osservice")


def _check_kind(data: Mapping[str, Any], interval: float, ttl: float) -> str:
    """Classify a check the way Consul's CheckType.Validate does, raising its messages."""
    present = {
        "script": bool(data.get("args") or data.get("scriptargs") or data.get("script")),
        **{kind: bool(data.get(kind)) for kind in _INTERVAL_KINDS[1:]},
    }
    interval_kinds = [kind for kind in _INTERVAL_KINDS if present[kind]]
    alias = bool(data.get("aliasnode") or data.get("aliasservice"))
    if interval > 0 and ttl > 0:
        raise _bad_request("Invalid check: Interval and TTL cannot both be specified")
    if interval_kinds and interval <= 0:
        raise _bad_request("Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks")
    if not interval_kinds and not alias and ttl <= 0:
        raise _bad_request("Invalid check: TTL must be > 0 for TTL checks")
    if interval_kinds:
        return interval_kinds[0]
    return "alias" if alias else "ttl"


def decode_check(raw: Any, *, for_service: bool) -> CheckRegistration | None:
    """Decode one check object; None for an empty one (Consul drops those)."""
    go_type = "structs.CheckType" if for_service else "structs.CheckDefinition"
    data = _normalized(raw, go_type)
    if _is_empty_check(data):
        return None
    where = go_type.split(".")[1]
    interval = _duration(data, "interval", f"{where}.Interval")
    ttl = _duration(data, "ttl", f"{where}.TTL")
    status = _str(data, "status", f"{where}.Status")
    if status and status not in _STATUSES:
        raise _bad_request(
            "Status for checks must 'passing', 'warning', 'critical'" if for_service else "Bad check status"
        )
    kind = _check_kind(data, interval, ttl)
    if kind == "script":
        raise ConsulHTTPError(500, _SCRIPTS_DISABLED)
    if kind not in ("http", "tcp", "ttl"):
        raise _bad_request(f"devconsul: {kind} checks are not supported (only HTTP, TCP and TTL checks)")
    definition = CheckDefinition(
        kind=kind,
        http=_str(data, "http", f"{where}.HTTP"),
        method=_str(data, "method", f"{where}.Method"),
        header=_header(data, f"{where}.Header"),
        body=_str(data, "body", f"{where}.Body"),
        tcp=_str(data, "tcp", f"{where}.TCP"),
        tls_skip_verify=_bool(data, "tlsskipverify", f"{where}.TLSSkipVerify"),
        interval=interval,
        timeout=_duration(data, "timeout", f"{where}.Timeout") or _DEFAULT_CHECK_TIMEOUT,
        ttl=ttl,
        deregister_critical_after=_duration(
            data, "deregistercriticalserviceafter", f"{where}.DeregisterCriticalServiceAfter"
        ),
    )
    return CheckRegistration(
        check_id=_str(data, "checkid", f"{where}.CheckID") or _str(data, "id", f"{where}.ID"),
        name=_str(data, "name", f"{where}.Name"),
        notes=_str(data, "notes", f"{where}.Notes"),
        status=status,
        definition=definition,
        service_id=_str(data, "serviceid", f"{where}.ServiceID"),
    )


def _decode_weights(raw: Any) -> tuple[int, int]:
    if raw is None:
        return (1, 1)
    data = _normalized(raw, "structs.Weights")
    passing = _int(data, "passing", "Weights.Passing")
    warning = _int(data, "warning", "Weights.Warning")
    if passing <= 0:
        raise _bad_request("Invalid Weights: Passing must be greater than 0")
    if warning < 0:
        raise _bad_request("Invalid Weights: Warning must be greater or equal than 0")
    return (passing, warning)


def _decode_tagged_addresses(raw: Any, address: str, port: int) -> tuple[TaggedAddress, ...]:
    """Given tagged addresses plus the lan/wan ipv4/ipv6 ones Consul derives from an IP Address."""
    given: dict[str, TaggedAddress] = {}
    if raw is not None:
        if not isinstance(raw, dict):
            raise _type_error(raw, "ServiceDefinition.TaggedAddresses", "map[string]structs.ServiceAddress")
        for tag, value in raw.items():
            item = _normalized(value, "structs.ServiceAddress")
            given[tag] = TaggedAddress(
                tag,
                _str(item, "address", "ServiceAddress.Address"),
                _int(item, "port", "ServiceAddress.Port"),
            )
    try:
        version = ipaddress.ip_address(address).version
    except ValueError:
        version = 0
    if version:
        for tag in (f"lan_ipv{version}", f"wan_ipv{version}"):
            given.setdefault(tag, TaggedAddress(tag, address, port))
    return tuple(sorted(given.values(), key=lambda item: item.tag))


def _decode_service_checks(data: Mapping[str, Any], service: Service) -> tuple[CheckRegistration, ...]:
    raw_checks: list[Any] = []
    if data.get("check") is not None:
        raw_checks.append(data["check"])
    checks_value = data.get("checks")
    if checks_value is not None:
        if not isinstance(checks_value, list):
            raise _type_error(checks_value, "ServiceDefinition.Checks", "structs.CheckTypes")
        raw_checks.extend(checks_value)
    decoded = [reg for reg in (decode_check(raw, for_service=True) for raw in raw_checks) if reg is not None]
    named = []
    for position, reg in enumerate(decoded, start=1):
        default_id = f"service:{service.service_id}" + (f":{position}" if len(decoded) > 1 else "")
        named.append(
            replace(
                reg,
                check_id=reg.check_id or default_id,
                name=reg.name or f"Service '{service.name}' check",
                service_id=service.service_id,
            )
        )
    return tuple(named)


def decode_service_registration(raw: Any) -> ServiceRegistration:
    """Decode and validate a /v1/agent/service/register body, in the order Consul validates it."""
    data = _normalized(raw, "structs.ServiceDefinition")
    name = _str(data, "name", "ServiceDefinition.Name")
    if not name:
        raise _bad_request("Missing service name")
    address = _str(data, "address", "ServiceDefinition.Address")
    if _is_unspecified_address(address):
        raise _bad_request("Invalid service address")
    port = _int(data, "port", "ServiceDefinition.Port")
    service = Service(
        service_id=_str(data, "id", "ServiceDefinition.ID") or name,
        name=name,
        tags=_str_list(data, "tags", "ServiceDefinition.Tags"),
        address=address,
        port=port,
        meta=_str_map(data, "meta", "ServiceDefinition.Meta"),
        weights=_decode_weights(data.get("weights")),
        enable_tag_override=_bool(data, "enabletagoverride", "ServiceDefinition.EnableTagOverride"),
        tagged_addresses=_decode_tagged_addresses(data.get("taggedaddresses"), address, port),
        kind=_str(data, "kind", "ServiceDefinition.Kind"),
    )
    return ServiceRegistration(service, _decode_service_checks(data, service))


# --------------------------------------------------------------------------------------------------
# The JSON Consul answers with (field names and casing from its docs and Go structs).


def _node_json(node: Node) -> dict[str, Any]:
    return {
        "ID": node.node_id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": {
            "lan": node.address,
            "lan_ipv4": node.address,
            "wan": node.address,
            "wan_ipv4": node.address,
        },
        "Meta": {"consul-network-segment": ""},
        "CreateIndex": node.create_index,
        "ModifyIndex": node.modify_index,
    }


def _meta_json(meta: tuple[tuple[str, str], ...] | None) -> dict[str, str] | None:
    return None if meta is None else dict(meta)


def _tagged_json(service: Service) -> dict[str, Any]:
    return {item.tag: {"Address": item.address, "Port": item.port} for item in service.tagged_addresses}


def _weights_json(service: Service) -> dict[str, int]:
    return {"Passing": service.weights[0], "Warning": service.weights[1]}


def _service_json(service: Service) -> dict[str, Any]:
    """Consul's NodeService, as in health/service entries."""
    out: dict[str, Any] = {
        "Kind": service.kind,
        "ID": service.service_id,
        "Service": service.name,
        "Tags": list(service.tags),
        "Address": service.address,
        "Meta": _meta_json(service.meta),
        "Port": service.port,
        "Weights": _weights_json(service),
        "EnableTagOverride": service.enable_tag_override,
        "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
        "Connect": {},
        "PeerName": "",
        "CreateIndex": service.create_index,
        "ModifyIndex": service.modify_index,
    }
    if service.tagged_addresses:
        out["TaggedAddresses"] = _tagged_json(service)
    return out


def _agent_service_json(service: Service, datacenter: str) -> dict[str, Any]:
    """Consul's AgentService, as in /v1/agent/services."""
    out = {
        key: value
        for key, value in _service_json(service).items()
        if key not in ("Proxy", "Connect", "PeerName", "CreateIndex", "ModifyIndex")
    }
    out["Meta"] = out["Meta"] or {}
    out["Datacenter"] = datacenter
    return out


def _definition_json(definition: CheckDefinition) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if definition.http:
        out.update(
            HTTP=definition.http,
            Method=definition.method,
            Header={name: list(values) for name, values in definition.header} or None,
            TLSSkipVerify=definition.tls_skip_verify,
        )
    if definition.tcp:
        out["TCP"] = definition.tcp
    if definition.interval:
        out["Interval"] = format_go_duration(definition.interval)
    if definition.kind in ("http", "tcp"):
        out["Timeout"] = format_go_duration(definition.timeout)
    if definition.deregister_critical_after:
        out["DeregisterCriticalServiceAfter"] = format_go_duration(definition.deregister_critical_after)
    return out


def _check_type(definition: CheckDefinition) -> str:
    return "" if definition.kind in ("serf", "") else definition.kind


def _check_json(check: Check, node: Node) -> dict[str, Any]:
    """Consul's HealthCheck."""
    definition = check.definition
    return {
        "Node": node.name,
        "CheckID": check.check_id,
        "Name": check.name,
        "Status": check.status,
        "Notes": check.notes,
        "Output": check.output,
        "ServiceID": check.service_id,
        "ServiceName": check.service_name,
        "ServiceTags": list(check.service_tags),
        "Type": _check_type(definition),
        "Interval": format_go_duration(definition.interval) if definition.interval else "",
        "Timeout": format_go_duration(definition.timeout) if definition.kind in ("http", "tcp") else "",
        "ExposedPort": 0,
        "Definition": _definition_json(definition),
        "CreateIndex": check.create_index,
        "ModifyIndex": check.modify_index,
    }


def _catalog_service_json(service: Service, node: Node) -> dict[str, Any]:
    """Consul's ServiceNode, as in /v1/catalog/service/<name>."""
    return {
        "ID": node.node_id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": _node_json(node)["TaggedAddresses"],
        "NodeMeta": _node_json(node)["Meta"],
        "ServiceKind": service.kind,
        "ServiceID": service.service_id,
        "ServiceName": service.name,
        "ServiceTags": list(service.tags),
        "ServiceAddress": service.address,
        "ServiceTaggedAddresses": _tagged_json(service) or None,
        "ServiceWeights": _weights_json(service),
        "ServiceMeta": _meta_json(service.meta) or {},
        "ServicePort": service.port,
        "ServiceEnableTagOverride": service.enable_tag_override,
        "ServiceProxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
        "ServiceConnect": {},
        "CreateIndex": service.create_index,
        "ModifyIndex": service.modify_index,
    }


# --------------------------------------------------------------------------------------------------
# ?filter= : a subset of go-bexpr, the expression language Consul's filter parameter takes.
# Supported: `Sel == V`, `Sel != V`, `V in Sel`, `V not in Sel`, `Sel contains V`,
# `Sel not contains V`, `Sel matches "re"`, `Sel not matches "re"`, `Sel is empty`,
# `Sel is not empty`, `and`, `or`, `not`, parentheses; values "quoted", `raw` or bare words.
# A selector that runs through a list (Checks.Status) matches when any element matches.

Predicate = Callable[[Any], bool]
_MISSING: Final = object()
_FILTER_TOKEN: Final = re.compile(
    r'\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<op>==|!=)|(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)'
    r"|(?P<word>[^\s()\"`=!]+))"
)


class FilterError(ValueError):
    """A filter expression that cannot be compiled."""


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _FILTER_TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            raise FilterError(f"syntax error at position {pos}: {text[pos : pos + 20]!r}")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    return tokens


def _literal(token: tuple[str, str]) -> str:
    kind, text = token
    if kind == "str":
        return str(json.loads(text))
    if kind == "raw":
        return text[1:-1]
    if kind == "word":
        return text
    raise FilterError(f"expected a value, got {text!r}")


def _resolve(value: Any, path: Sequence[str]) -> list[Any]:
    if not path:
        return [value]
    if isinstance(value, list):
        return [found for item in value for found in _resolve(item, path)]
    if isinstance(value, dict) and path[0] in value:
        return _resolve(value[path[0]], path[1:])
    return [_MISSING]


def _equals(value: Any, literal: str) -> bool:
    if isinstance(value, bool):
        return literal in ("true", "false") and value == (literal == "true")
    if isinstance(value, int | float):
        try:
            return value == float(literal)
        except ValueError:
            return False
    return isinstance(value, str) and value == literal


def _contains(value: Any, literal: str) -> bool:
    if isinstance(value, list):
        return any(isinstance(item, str) and item == literal for item in value)
    if isinstance(value, dict | str):
        return literal in value
    return False


def _is_empty(value: Any) -> bool:
    if value is None or value is _MISSING:
        return True
    return isinstance(value, list | dict | str) and len(value) == 0


def _selector_predicate(path: Sequence[str], test: Callable[[Any], bool], negate: bool) -> Predicate:
    def predicate(item: Any) -> bool:
        return any(test(value) for value in _resolve(item, path)) != negate

    return predicate


def _all_of(left: Predicate, right: Predicate) -> Predicate:
    return lambda item: left(item) and right(item)


def _any_of(left: Predicate, right: Predicate) -> Predicate:
    return lambda item: left(item) or right(item)


def _none_of(inner: Predicate) -> Predicate:
    return lambda item: not inner(item)


class _FilterParser:
    """Recursive descent over the tokens; `fields` are the valid first selector segments."""

    def __init__(self, text: str, fields: frozenset[str]) -> None:
        self._tokens = _tokenize(text)
        self._pos = 0
        self._fields = fields

    def parse(self) -> Predicate:
        if not self._tokens:
            raise FilterError("empty expression")
        predicate = self._or()
        if self._pos != len(self._tokens):
            raise FilterError(f"unexpected {self._tokens[self._pos][1]!r}")
        return predicate

    def _peek(self, offset: int = 0) -> tuple[str, str] | None:
        index = self._pos + offset
        return self._tokens[index] if index < len(self._tokens) else None

    def _is_word(self, word: str, offset: int = 0) -> bool:
        return self._peek(offset) == ("word", word)

    def _next(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise FilterError("unexpected end of expression")
        self._pos += 1
        return token

    def _expect_word(self, word: str) -> None:
        token = self._next()
        if token != ("word", word):
            raise FilterError(f"expected {word!r}, got {token[1]!r}")

    def _or(self) -> Predicate:
        predicate = self._and()
        while self._is_word("or"):
            self._pos += 1
            predicate = _any_of(predicate, self._and())
        return predicate

    def _and(self) -> Predicate:
        predicate = self._not()
        while self._is_word("and"):
            self._pos += 1
            predicate = _all_of(predicate, self._not())
        return predicate

    def _not(self) -> Predicate:
        if self._is_word("not"):
            self._pos += 1
            return _none_of(self._not())
        if self._peek() == ("lp", "("):
            self._pos += 1
            predicate = self._or()
            if self._next() != ("rp", ")"):
                raise FilterError("missing ')'")
            return predicate
        return self._match()

    def _selector(self, token: tuple[str, str]) -> list[str]:
        if token[0] != "word":
            raise FilterError(f"expected a selector, got {token[1]!r}")
        path = token[1].split(".")
        if path[0] not in self._fields:
            raise FilterError(f'Selector "{token[1]}" is not valid')
        return path

    def _match(self) -> Predicate:
        first = self._next()
        if self._is_word("in") or (self._is_word("not") and self._is_word("in", 1)):
            negate = self._is_word("not")
            self._pos += 2 if negate else 1
            literal = _literal(first)
            return _selector_predicate(self._selector(self._next()), lambda v: _contains(v, literal), negate)
        path = self._selector(first)
        token = self._next()
        if token[0] == "op":
            literal = _literal(self._next())
            return _selector_predicate(path, lambda v: _equals(v, literal), token[1] == "!=")
        if token == ("word", "is"):
            negate = self._is_word("not")
            self._pos += 1 if negate else 0
            self._expect_word("empty")
            return _selector_predicate(path, _is_empty, negate)
        negate = token == ("word", "not")
        if negate:
            token = self._next()
        return self._binary(path, token, negate)

    def _binary(self, path: list[str], token: tuple[str, str], negate: bool) -> Predicate:
        literal = _literal(self._next())
        if token == ("word", "contains"):
            return _selector_predicate(path, lambda v: _contains(v, literal), negate)
        if token == ("word", "matches"):
            try:
                pattern = re.compile(literal)
            except re.error as exc:
                raise FilterError(f"invalid regular expression {literal!r}: {exc}") from None
            return _selector_predicate(path, lambda v: isinstance(v, str) and bool(pattern.search(v)), negate)
        raise FilterError(f"unexpected {token[1]!r}")


def compile_filter(text: str, fields: Iterable[str]) -> Predicate:
    """Compile a Consul ?filter= expression for items whose top-level keys are `fields`."""
    return _FilterParser(text, frozenset(fields)).parse()


_HEALTH_FIELDS: Final = ("Node", "Service", "Checks")
_CHECK_FIELDS: Final = tuple(_check_json(Check("", "", PASSING), Node("", "", "", "")))
_NODE_FIELDS: Final = tuple(_node_json(Node("", "", "", "")))
_CATALOG_SERVICE_FIELDS: Final = tuple(_catalog_service_json(Service("", ""), Node("", "", "", "")))
_AGENT_SERVICE_FIELDS: Final = (*_agent_service_json(Service("", ""), ""), "TaggedAddresses")


# --------------------------------------------------------------------------------------------------
# The state store.


def _service_table(name: str) -> str:
    return f"service:{name}"


def _catalog_table(name: str) -> str:
    return f"catalog:{name}"


def _instance_tables(name: str) -> set[str]:
    """What a change to an instance of service `name` moves: the catalog's and the health view's."""
    return {"services", _service_table(name), _catalog_table(name)}


class _Catalog:
    """Services, checks and Consul's raft-like indexes for one node.

    Every agent write is one raft entry: one new global index for everything it changed. Each
    record carries CreateIndex/ModifyIndex. Per-table indexes say what a query depends on:
    "services", "checks", "nodes", "node_checks", "catalog:<name>" (its instances) and
    "service:<name>" (its instances, their checks, and its deregistration). A write that changes
    nothing moves no index, as an idempotent catalog write in Consul leaves its tables alone.
    """

    def __init__(self, node: Node, on_change: Callable[[], None]) -> None:
        self.node = node
        self.index = node.modify_index
        self.services: dict[str, Service] = {}
        self.checks: dict[str, Check] = {}
        self._by_name: dict[str, set[str]] = {}
        self._by_owner: dict[str, set[str]] = {}
        self._tables: dict[str, int] = {"nodes": node.modify_index}
        self._on_change = on_change

    def table_index(self, table: str) -> int:
        """The index of a table, or the global one for a table never written (Consul's behaviour)."""
        return self._tables.get(table, self.index)

    def health_index(self, name: str) -> int:
        """What a health/service/<name> answer depends on: its instances, their checks, node checks."""
        own = self._tables.get(_service_table(name))
        if own is None:
            return self.index
        return max(own, self._tables.get("node_checks", 0))

    def instances(self, name: str) -> list[Service]:
        return sorted((self.services[sid] for sid in self._by_name.get(name, ())), key=lambda s: s.service_id)

    def checks_of(self, owner: str) -> list[Check]:
        """The checks of a service ID, or the node-level checks for owner ""."""
        return sorted((self.checks[cid] for cid in self._by_owner.get(owner, ())), key=lambda c: c.check_id)

    def write(
        self,
        *,
        services: Iterable[Service] = (),
        drop_services: Iterable[str] = (),
        checks: Iterable[Check] = (),
        drop_checks: Iterable[str] = (),
    ) -> bool:
        """Apply one agent write atomically. Returns whether anything changed (and an index moved)."""
        index = self.index + 1
        tables: set[str] = set()
        for service in services:
            tables |= self._put_service(service, index)
        for check in checks:
            tables |= self._put_check(check, index)
        for check_id in drop_checks:
            tables |= self._drop_check(check_id)
        for service_id in drop_services:
            tables |= self._drop_service(service_id)
        if not tables:
            return False
        self.index = index
        self._tables.update(dict.fromkeys(tables, index))
        self._on_change()
        return True

    def _put_service(self, service: Service, index: int) -> set[str]:
        old = self.services.get(service.service_id)
        if old is not None and _unindexed(old) == _unindexed(service):
            return set()
        self.services[service.service_id] = replace(
            service, create_index=old.create_index if old else index, modify_index=index
        )
        tables = _instance_tables(service.name)
        if old is not None:
            self._by_name[old.name].discard(old.service_id)
            tables |= _instance_tables(old.name)
        self._by_name.setdefault(service.name, set()).add(service.service_id)
        return tables

    def _check_tables(self, check: Check) -> set[str]:
        return {"checks", _service_table(check.service_name) if check.service_id else "node_checks"}

    def _put_check(self, check: Check, index: int) -> set[str]:
        old = self.checks.get(check.check_id)
        if old is not None and _unindexed(old) == _unindexed(check):
            return set()
        self.checks[check.check_id] = replace(
            check, create_index=old.create_index if old else index, modify_index=index
        )
        tables = self._check_tables(check)
        if old is not None:
            self._by_owner[old.service_id].discard(old.check_id)
            tables |= self._check_tables(old)
        self._by_owner.setdefault(check.service_id, set()).add(check.check_id)
        return tables

    def _drop_check(self, check_id: str) -> set[str]:
        old = self.checks.pop(check_id, None)
        if old is None:
            return set()
        self._by_owner[old.service_id].discard(check_id)
        return self._check_tables(old)

    def _drop_service(self, service_id: str) -> set[str]:
        old = self.services.pop(service_id, None)
        if old is None:
            return set()
        self._by_name[old.name].discard(service_id)
        tables = _instance_tables(old.name)
        for check_id in list(self._by_owner.get(service_id, ())):
            tables |= self._drop_check(check_id)
        return tables


# --------------------------------------------------------------------------------------------------
# Checks devconsul really runs.


def _go_op(method: str) -> str:
    return method[:1].upper() + method[1:].lower()


def _dial_error(target: str, exc: OSError) -> str:
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return f"dial tcp {target}: connect: {reason}"


async def _read_head(content: aiohttp.StreamReader, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _http_status(code: int) -> str:
    """Map a probe's status code to Consul's: 2xx passing, 429 warning, anything else critical."""
    if 200 <= code <= 299:
        return PASSING
    return WARNING if code == 429 else CRITICAL


async def probe_http(session: aiohttp.ClientSession, definition: CheckDefinition) -> tuple[str, str]:
    """Run one HTTP check the way Consul's CheckHTTP does; returns (status, output)."""
    method = definition.method or "GET"
    headers: list[tuple[str, str]] = [(name, value) for name, values in definition.header for value in values]
    names = {name.lower() for name, _ in headers}
    if "user-agent" not in names:
        headers.append(("User-Agent", "Consul Health Check"))
    if "accept" not in names:
        headers.append(("Accept", "text/plain, text/*, */*"))
    url = definition.http
    failure = f"{_go_op(method)} {_go_quote(url)}"
    try:
        async with session.request(
            method,
            url,
            headers=headers,
            data=definition.body.encode() if definition.body else None,
            ssl=not definition.tls_skip_verify,
            timeout=aiohttp.ClientTimeout(total=definition.timeout or _DEFAULT_CHECK_TIMEOUT),
        ) as response:
            head = await _read_head(response.content, _OUTPUT_MAX)
    except TimeoutError:
        deadline = "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        return CRITICAL, f"{failure}: {deadline}"
    except aiohttp.ClientConnectorError as exc:
        return CRITICAL, f"{failure}: {_dial_error(f'{exc.host}:{exc.port}', exc.os_error)}"
    except (aiohttp.ClientError, ValueError, OSError) as exc:
        return CRITICAL, f"{failure}: {exc or type(exc).__name__}"
    body = head.decode("utf-8", errors="replace")
    output = f"HTTP {method} {url}: {response.status} {response.reason or ''} Output: {body}"
    return _http_status(response.status), output


async def probe_tcp(definition: CheckDefinition) -> tuple[str, str]:
    """Run one TCP check: passing when a connection can be opened."""
    host, _, port = definition.tcp.rpartition(":")
    try:
        async with asyncio.timeout(definition.timeout or _DEFAULT_CHECK_TIMEOUT):
            _reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    except TimeoutError:
        return CRITICAL, f"dial tcp {definition.tcp}: i/o timeout"
    except OSError as exc:
        return CRITICAL, _dial_error(definition.tcp, exc)
    except ValueError:
        return CRITICAL, f"dial tcp {definition.tcp}: invalid address"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return PASSING, f"TCP connect {definition.tcp}: Success"


def _truncate_output(output: str) -> str:
    if len(output) <= _OUTPUT_MAX:
        return output
    return f"{output[:_OUTPUT_MAX]} ... (captured {_OUTPUT_MAX} of {len(output)} bytes)"


def _ttl_expired_output(last_output: str) -> str:
    if not last_output:
        return "TTL expired"
    return f"TTL expired (last output before timeout follows): {last_output}"


@dataclass
class _Runner:
    """What keeps one check alive: a probing task (HTTP/TCP) or a TTL timer."""

    definition: CheckDefinition
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    last_output: str = ""

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.timer is not None:
            self.timer.cancel()


# --------------------------------------------------------------------------------------------------
# HTTP plumbing.


@dataclass(frozen=True)
class _ReadOptions:
    """The query parameters every read shares (blocking, consistency, filter, pretty)."""

    min_index: int
    wait: float
    consistency: str
    pretty: bool
    predicate: Predicate | None = field(default=None, compare=False)

    def keep(self, items: Iterable[Any]) -> list[Any]:
        predicate = self.predicate
        return [item for item in items if predicate is None or predicate(item)]


def _text_response(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message, content_type="text/plain", charset="utf-8")


def _json_bytes(payload: Any, pretty: bool) -> bytes:
    if pretty:
        return json.dumps(payload, indent=4).encode()
    return json.dumps(payload, separators=(",", ":")).encode()


def _is_faulted_path(path: str) -> bool:
    return path.startswith(_FAULTED_PREFIXES)


def _request_token(request: web.Request) -> str | None:
    """The token as Consul looks for it: X-Consul-Token, then Authorization: Bearer, then ?token=."""
    header = request.headers.get("X-Consul-Token")
    if header:
        return header
    authorization = request.headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer " and authorization[7:].strip():
        return authorization[7:].strip()
    return request.query.get("token") or None


def _reset_transport(transport: asyncio.BaseTransport) -> None:
    """Abort a connection with a TCP RST (SO_LINGER 0), the way a crashed or reset peer looks."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


def _bind_listener(host: str, port: int) -> socket.socket:
    """Bind and listen synchronously, so that connections queue (not refused) from this moment on."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _enable_param(request: web.Request) -> bool:
    if "enable" not in request.query:
        raise _bad_request("Missing value for enable")
    raw = request.query["enable"]
    try:
        return _parse_go_bool(raw)
    except ValueError:
        raise _bad_request(f"Invalid value for enable: {_go_quote(raw)}") from None


def _passing_param(request: web.Request) -> bool:
    if "passing" not in request.query:
        return False
    raw = request.query["passing"]
    if raw == "":
        return True
    try:
        return _parse_go_bool(raw)
    except ValueError:
        raise _bad_request("Invalid value for ?passing") from None


def _has_tags(service: Service, wanted: Sequence[str]) -> bool:
    """Consul's ?tag= filter: every given tag must be present, compared case-insensitively."""
    have = {tag.lower() for tag in service.tags}
    return all(tag.lower() in have for tag in wanted)


def _all_passing(entry: Mapping[str, Any]) -> bool:
    return all(check["Status"] == PASSING for check in entry["Checks"])


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        raise _bad_request("Request decode failed: EOF")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _bad_request(f"Request decode failed: {exc}") from None


# --------------------------------------------------------------------------------------------------
# The server.


class DevConsul:
    """A Consul agent's HTTP API on a real port, for one node, with an in-memory catalog.

    Use it from asyncio code (``await DevConsul().start()``); synchronous code uses
    `DevConsulThread`. All methods must be called from the event loop that started it.

    Endpoints: agent service register/deregister/maintenance, agent check register/deregister/
    pass/warn/fail/update, agent node maintenance, agent services/service/checks/self/members,
    health service/checks/state/node, catalog services/service/nodes/datacenters, status
    leader/peers, the fault switch at /v1/devconsul/fault (GET, PUT, DELETE), and bulk writes for
    benchmarks and tests at /v1/devconsul/bulk/register, /v1/devconsul/bulk/deregister,
    /v1/devconsul/bulk/weights (PUT; one index each) and
    /v1/devconsul/bulk/weights-over-time (PUT; several weight writes on a timer).

    Faults (see FAULTS) hit /v1/health/*, /v1/catalog/* and /v1/status/*; agent endpoints keep
    working except under "refuse" and "reset", and the fault switch itself is only out of reach
    under "refuse" (use clear_fault()). Error faults also end blocking queries already pending.

    Where it deliberately differs from Consul: the "consul" service is in the catalog (as on a
    server agent) with only serfHealth; HTTP/TCP checks run at once after registration instead of
    after a random stagger, and their output is written on every change (Consul may defer
    output-only updates by check_update_interval); DeregisterCriticalServiceAfter has no 1-minute
    floor; script, gRPC, H2PING, UDP, OSService and alias checks are refused with 400 (scripts with
    Consul's own 500); ?filter= is a go-bexpr subset (see compile_filter); there is no KV, no
    sessions, no Connect, no hash-based blocking on agent endpoints; agent reads also carry
    X-Consul-Index (the global index); the ACL system is one token that may do everything,
    required on every request, the fault switch included.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        datacenter: str = "dc1",
        node: str = "devconsul",
        node_address: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._token = token or None
        self._ssl_context = ssl_context
        self._node = Node(
            node_id=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{node}.{datacenter}.devconsul")),
            name=node,
            address=node_address,
            datacenter=datacenter,
        )
        self._catalog = _Catalog(self._node, self._after_change)
        self._fault: Fault = _NO_FAULT
        self._highest_reported = 0
        self._random = random.Random()
        self._wakeup = asyncio.Event()
        self._runners: dict[str, _Runner] = {}
        self._reapers: dict[str, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._pending_sock: socket.socket | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False
        self._bootstrap()

    # ---- lifecycle -------------------------------------------------------------------------------

    def _bootstrap(self) -> None:
        """Register what a fresh server agent has: its serfHealth check and the "consul" service."""
        self._catalog.write(
            checks=[
                Check(
                    SERF_CHECK_ID,
                    "Serf Health Status",
                    PASSING,
                    output="Agent alive and reachable",
                    definition=CheckDefinition("serf"),
                )
            ]
        )
        self._catalog.write(
            services=[
                Service(
                    "consul",
                    "consul",
                    port=8300,
                    local=False,
                    meta=(
                        ("non_voter", "false"),
                        ("raft_version", "3"),
                        ("read_replica", "false"),
                        ("serf_protocol_current", "2"),
                        ("serf_protocol_max", "5"),
                        ("serf_protocol_min", "1"),
                        ("version", CONSUL_VERSION),
                    ),
                )
            ]
        )

    async def start(self) -> None:
        """Bind and serve. Afterwards `port` is the real port (port=0 picks a free one)."""
        if self._runner is not None:
            raise RuntimeError("devconsul already started")
        self._loop = asyncio.get_running_loop()
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 1024 * 1024)
        app.add_routes(self._routes())
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.25)
        await runner.setup()
        try:
            sock = _bind_listener(self.host, self.port)
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = sock.getsockname()[1]
        self._pending_sock = sock
        try:
            await self._serve(sock)
        except BaseException:
            self._runner = None
            await runner.cleanup()
            raise
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0))
        self._reconcile()
        _log.info(
            "devconsul: started %s",
            _kv(
                url=self.url,
                datacenter=self._node.datacenter,
                node=self._node.name,
                acl=self._token is not None,
            ),
        )

    async def stop(self) -> None:
        """Stop at once: abort every connection (pending blocking queries too) and every check."""
        if self._runner is None or self._stopping:
            return
        self._stopping = True
        self._notify()
        self._stop_listening(spare=None)
        if self._listen_task is not None:
            await asyncio.gather(self._listen_task, return_exceptions=True)
        self._stop_listening(spare=None)  # in case that task got a listener up meanwhile
        tasks = [runner.task for runner in self._runners.values() if runner.task is not None]
        for runner in self._runners.values():
            runner.cancel()
        for handle in self._reapers.values():
            handle.cancel()
        self._runners.clear()
        self._reapers.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        _log.info("devconsul: stopped %s", _kv(url=self.url))

    async def __aenter__(self) -> DevConsul:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def address(self) -> str:
        """host:port, as CONSUL_HTTP_ADDR takes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self.address}"

    @property
    def index(self) -> int:
        """The current global (raft-like) index."""
        return self._catalog.index

    # ---- listening and faults --------------------------------------------------------------------

    async def _serve(self, sock: socket.socket) -> None:
        """Serve a socket bound by _bind_pending, unless _stop_listening closed it before we got here.

        create_server(start_serving=False) returns without suspending, so `_server` is set before
        anything else can run, and a later _stop_listening finds it and closes it.
        """
        assert self._loop is not None and self._runner is not None and self._runner.server is not None
        if sock is not self._pending_sock:
            return
        self._pending_sock = None
        try:
            server = await self._loop.create_server(
                self._runner.server, sock=sock, ssl=self._ssl_context, backlog=1024, start_serving=False
            )
        except BaseException:
            sock.close()
            raise
        if self._fault.name == "refuse" or self._stopping:
            server.close()
            return
        self._server = server
        await server.start_serving()

    def _bind_pending(self) -> socket.socket:
        """Bind and listen now, synchronously, so connections queue (not refused) from this moment on."""
        sock = _bind_listener(self.host, self.port)
        self._pending_sock = sock
        return sock

    def _stop_listening(self, spare: asyncio.BaseTransport | None) -> None:
        """Close the listener (or the one about to be served) and reset every connection but `spare`."""
        if self._pending_sock is not None:
            self._pending_sock.close()
            self._pending_sock = None
        if self._server is not None:
            self._server.close()
            self._server = None
        self._reset_connections(spare)

    def _reset_connections(self, spare: asyncio.BaseTransport | None) -> None:
        """Reset every open connection (idle keep-alive ones too) except `spare`."""
        server = self._runner.server if self._runner is not None else None
        for connection in server.connections if server is not None else ():
            transport = connection.transport
            if transport is not None and transport is not spare:
                _reset_transport(transport)

    def _resume_listening(self) -> None:
        """Listen on the same port again: bound at once, served by a task on the next loop turn."""
        assert self._loop is not None
        if self._server is not None or self._pending_sock is not None:
            return
        sock = self._bind_pending()
        self._listen_task = self._loop.create_task(self._serve(sock), name="devconsul-listen")

    def set_fault(self, name: str, **params: Any) -> None:
        """Switch a fault on (replacing any other); see FAULTS for names and parameters."""
        self._switch_fault(make_fault(name, params, self._highest_reported), spare=None)

    def clear_fault(self) -> None:
        """Back to normal service (refuse: listening again on the same port)."""
        self._switch_fault(_NO_FAULT, spare=None)

    def _switch_fault(self, fault: Fault, spare: asyncio.BaseTransport | None) -> None:
        started = self._runner is not None and not self._stopping
        if started and self._fault.name == "refuse" and fault.name != "refuse":
            self._resume_listening()  # first: if the port is taken this raises and nothing changed
        previous, self._fault = self._fault, fault
        if started and fault.name == "refuse" and previous.name != "refuse":
            self._stop_listening(spare)
        if started and fault.name == "reset":
            self._reset_connections(spare)
        if fault.name:
            _log.warning("devconsul: fault set %s", _kv(**self._fault_json()))
        elif previous.name:
            _log.warning("devconsul: fault cleared %s", _kv(name=previous.name))
        self._notify()

    # ---- change propagation ----------------------------------------------------------------------

    def _notify(self) -> None:
        """Wake every blocking query; each re-checks its own index (one event per generation)."""
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()

    def _after_change(self) -> None:
        if self._loop is None:
            return
        self._notify()
        self._reconcile()

    def _reconcile(self) -> None:
        """Start, restart or stop check runners and critical-service reapers to match the catalog."""
        if self._loop is None or self._stopping:
            return
        checks = self._catalog.checks
        for check_id in [cid for cid in self._runners if cid not in checks]:
            self._runners.pop(check_id).cancel()
        for check_id, check in checks.items():
            current = self._runners.get(check_id)
            if check.definition.kind not in ("http", "tcp", "ttl"):
                continue
            if current is None or current.definition != check.definition:
                if current is not None:
                    current.cancel()
                self._runners[check_id] = self._start_runner(check_id, check.definition)
        self._reconcile_reapers()

    def _start_runner(self, check_id: str, definition: CheckDefinition) -> _Runner:
        assert self._loop is not None
        if definition.kind == "ttl":
            timer = self._loop.call_later(definition.ttl, self._expire_ttl, check_id)
            return _Runner(definition, timer=timer)
        probe = self._run_probe(check_id, definition)
        return _Runner(definition, task=self._loop.create_task(probe, name=f"devconsul-check-{check_id}"))

    def _reconcile_reapers(self) -> None:
        assert self._loop is not None
        checks = self._catalog.checks
        for check_id in [cid for cid in self._reapers if cid not in checks]:
            self._reapers.pop(check_id).cancel()
        for check_id, check in checks.items():
            after = check.definition.deregister_critical_after
            if after <= 0 or not check.service_id:
                continue
            if check.status == CRITICAL and check_id not in self._reapers:
                self._reapers[check_id] = self._loop.call_later(after, self._reap, check_id)
            elif check.status != CRITICAL and check_id in self._reapers:
                self._reapers.pop(check_id).cancel()

    def _reap(self, check_id: str) -> None:
        """DeregisterCriticalServiceAfter ran out: the service goes, with all its checks."""
        self._reapers.pop(check_id, None)
        check = self._catalog.checks.get(check_id)
        if check is None or check.status != CRITICAL:
            return
        _log.warning("devconsul: deregistering critical service %s", _kv(id=check.service_id, check=check_id))
        self._catalog.write(drop_services=[check.service_id])

    def _set_check_state(self, check_id: str, status: str, output: str) -> None:
        check = self._catalog.checks.get(check_id)
        if check is None:
            return
        changed = self._catalog.write(checks=[replace(check, status=status, output=output)])
        if changed and status != check.status:
            _log.info(
                "devconsul: check status %s",
                _kv(id=check_id, service=check.service_id, status=status, was=check.status),
            )

    async def _run_probe(self, check_id: str, definition: CheckDefinition) -> None:
        """Probe every Interval, starting at once; stops when cancelled (deregister, new definition, stop)."""
        assert self._session is not None
        while True:
            try:
                if definition.kind == "http":
                    status, output = await probe_http(self._session, definition)
                else:
                    status, output = await probe_tcp(definition)
            except Exception as exc:  # a bug in a probe must not kill the check silently
                _log.exception("devconsul: check probe failed %s", _kv(id=check_id))
                status, output = CRITICAL, f"devconsul: probe failed: {exc}"
            current = self._catalog.checks.get(check_id)
            if current is None or current.definition != definition:
                return
            self._set_check_state(check_id, status, output)
            await asyncio.sleep(definition.interval)

    def _expire_ttl(self, check_id: str) -> None:
        runner = self._runners.get(check_id)
        check = self._catalog.checks.get(check_id)
        if runner is None or check is None or runner.definition != check.definition:
            return
        runner.timer = None
        if check.status != CRITICAL:
            _log.warning("devconsul: check missed TTL %s", _kv(id=check_id))
        self._set_check_state(check_id, CRITICAL, _ttl_expired_output(runner.last_output))

    def _update_ttl(self, check_id: str, status: str, output: str) -> None:
        """TTL pass/warn/fail/update: set the state and restart the TTL clock."""
        assert self._loop is not None
        runner = self._runners.get(check_id)
        if runner is None or runner.definition.kind != "ttl":
            raise ConsulHTTPError(500, f"CheckID {_go_quote(check_id)} does not have associated TTL")
        output = _truncate_output(output)
        if runner.timer is not None:
            runner.timer.cancel()
        runner.timer = self._loop.call_later(runner.definition.ttl, self._expire_ttl, check_id)
        runner.last_output = output
        self._set_check_state(check_id, status, output)

    # ---- agent writes ----------------------------------------------------------------------------

    def _local_service(self, service_id: str) -> Service:
        service = self._catalog.services.get(service_id)
        if service is None or not service.local:
            raise ConsulHTTPError(
                404,
                f"Unknown service ID {_go_quote(service_id)}. "
                "Ensure that the service ID is passed, not the service name.",
            )
        return service

    def register_service(self, registration: ServiceRegistration, *, replace_existing_checks: bool) -> None:
        """Add or replace a service; checks it already had keep their state (as Consul's snapshot)."""
        service = registration.service
        previous = self._catalog.services.get(service.service_id)
        if previous is not None and not previous.local:
            raise _bad_request(f"Invalid service ID {_go_quote(service.service_id)}: reserved")
        existing = {check.check_id: check for check in self._catalog.checks_of(service.service_id)}
        checks = [self._new_check(reg, service, self._catalog.checks.get(reg.check_id)) for reg in registration.checks]
        given = {check.check_id for check in checks}
        dropped = [
            cid
            for cid in existing
            if cid not in given and replace_existing_checks and not cid.startswith(SERVICE_MAINT_PREFIX)
        ]
        kept = [
            replace(check, service_name=service.name, service_tags=service.tags)
            for cid, check in existing.items()
            if cid not in given and cid not in dropped
        ]
        self._catalog.write(services=[service], checks=checks + kept, drop_checks=dropped)
        _log.info(
            "devconsul: registered service %s",
            _kv(
                id=service.service_id,
                name=service.name,
                address=service.address,
                port=service.port,
                tags=",".join(service.tags),
                checks=len(checks),
            ),
        )

    def _new_check(self, reg: CheckRegistration, service: Service | None, previous: Check | None) -> Check:
        status = previous.status if previous is not None else (reg.status or CRITICAL)
        return Check(
            check_id=reg.check_id,
            name=reg.name,
            status=status,
            notes=reg.notes,
            output=previous.output if previous is not None else "",
            service_id=service.service_id if service else "",
            service_name=service.name if service else "",
            service_tags=service.tags if service else (),
            definition=reg.definition,
        )

    def deregister_service(self, service_id: str) -> None:
        self._local_service(service_id)
        self._catalog.write(drop_services=[service_id])
        _log.info("devconsul: deregistered service %s", _kv(id=service_id))

    def register_check(self, registration: CheckRegistration) -> None:
        service = None
        if registration.service_id:
            service = self._catalog.services.get(registration.service_id)
            if service is None or not service.local:
                raise ConsulHTTPError(500, f"ServiceID {_go_quote(registration.service_id)} does not exist")
        registration = replace(registration, check_id=registration.check_id or registration.name)
        check = self._new_check(registration, service, self._catalog.checks.get(registration.check_id))
        self._catalog.write(checks=[check])
        _log.info(
            "devconsul: registered check %s",
            _kv(id=check.check_id, service=check.service_id, type=check.definition.kind),
        )

    def deregister_check(self, check_id: str) -> None:
        check = self._catalog.checks.get(check_id)
        if check is None or check.check_id == SERF_CHECK_ID:
            raise ConsulHTTPError(
                404,
                f"Unknown check ID {_go_quote(check_id)}. Ensure that the check ID is passed, not the check name.",
            )
        self._catalog.write(drop_checks=[check_id])
        _log.info("devconsul: deregistered check %s", _kv(id=check_id))

    def set_service_maintenance(self, service_id: str, enable: bool, reason: str) -> None:
        service = self._local_service(service_id)
        check_id = SERVICE_MAINT_PREFIX + service_id
        if not enable:
            changed = self._catalog.write(drop_checks=[check_id])
        elif check_id in self._catalog.checks:
            changed = False  # idempotent, as Consul: the first reason stays
        else:
            changed = self._catalog.write(
                checks=[
                    Check(
                        check_id,
                        "Service Maintenance Mode",
                        CRITICAL,
                        notes=reason or _SERVICE_MAINT_REASON,
                        service_id=service_id,
                        service_name=service.name,
                        service_tags=service.tags,
                        definition=CheckDefinition("maintenance"),
                    )
                ]
            )
        if changed:
            _log.info("devconsul: service maintenance %s", _kv(id=service_id, enable=enable, reason=reason))

    def set_node_maintenance(self, enable: bool, reason: str) -> None:
        if not enable:
            changed = self._catalog.write(drop_checks=[NODE_MAINT_CHECK_ID])
        elif NODE_MAINT_CHECK_ID in self._catalog.checks:
            changed = False
        else:
            changed = self._catalog.write(
                checks=[
                    Check(
                        NODE_MAINT_CHECK_ID,
                        "Node Maintenance Mode",
                        CRITICAL,
                        notes=reason or _NODE_MAINT_REASON,
                        definition=CheckDefinition("maintenance"),
                    )
                ]
            )
        if changed:
            _log.info("devconsul: node maintenance %s", _kv(enable=enable, reason=reason))

    # ---- bulk writes (benchmarks) ----------------------------------------------------------------
    # Each agent write above is one catalog write, and every catalog write reconciles the check runners
    # over the whole catalog and wakes every blocking query. That is right for a handful of changes,
    # but populating 30,000 instances one call at a time costs O(N^2), and a benchmark's burst of
    # 10,000 changes would measure devconsul instead of its clients. These two take many records and
    # make them one write (one index), as a batch of agent syncs lands in one raft entry.

    def register_services(self, registrations: Sequence[ServiceRegistration]) -> int:
        """Register many services in one catalog write; each one as ``register_service`` would.

        Checks a service already had keep their state (``replace_existing_checks`` off). All or
        nothing: a reserved ID fails the whole call before anything changes. A service ID given twice
        keeps the last. Returns how many registrations were given.
        """
        latest = {registration.service.service_id: registration for registration in registrations}
        for service_id in latest:
            previous = self._catalog.services.get(service_id)
            if previous is not None and not previous.local:
                raise _bad_request(f"Invalid service ID {_go_quote(service_id)}: reserved")
        services: list[Service] = []
        checks: list[Check] = []
        for registration in latest.values():
            service = registration.service
            given = {reg.check_id for reg in registration.checks}
            checks.extend(
                self._new_check(reg, service, self._catalog.checks.get(reg.check_id)) for reg in registration.checks
            )
            checks.extend(
                replace(check, service_name=service.name, service_tags=service.tags)
                for check in self._catalog.checks_of(service.service_id)
                if check.check_id not in given
            )
            services.append(service)
        self._catalog.write(services=services, checks=checks)
        _log.info("devconsul: registered services in bulk %s", _kv(count=len(services), index=self._catalog.index))
        return len(latest)

    def deregister_services(self, service_ids: Sequence[str]) -> int:
        """Deregister many local services in one catalog write, as a node that leaves takes all of its
        services at once. All or nothing: an unknown ID fails before anything changes."""
        unique = list(dict.fromkeys(service_ids))
        for service_id in unique:
            self._local_service(service_id)
        self._catalog.write(drop_services=unique)
        _log.info("devconsul: deregistered services in bulk %s", _kv(count=len(unique), index=self._catalog.index))
        return len(unique)

    def set_weights(self, weights: Mapping[str, tuple[int, int]]) -> int:
        """Change the ``Weights`` (passing, warning) of many local services in one catalog write.

        The same change as re-registering each service with new weights (checks untouched), minus
        the decoding. All or nothing: an unknown ID or an invalid weight fails before anything
        changes. Returns how many services changed (a weight already set changes nothing).
        """
        updated = []
        for service_id, (passing, warning) in weights.items():
            service = self._local_service(service_id)
            if passing <= 0:
                raise _bad_request("Invalid Weights: Passing must be greater than 0")
            if warning < 0:
                raise _bad_request("Invalid Weights: Warning must be greater or equal than 0")
            if service.weights != (passing, warning):
                updated.append(replace(service, weights=(passing, warning)))
        if updated:
            self._catalog.write(services=updated)
        _log.info("devconsul: weights set in bulk %s", _kv(changed=len(updated), index=self._catalog.index))
        return len(updated)

    async def set_weights_over_time(
        self, writes: Sequence[Mapping[str, tuple[int, int]]], interval: float
    ) -> list[tuple[float, int]]:
        """``set_weights`` for each of ``writes``, ``interval`` seconds apart, timed on this event loop.

        A burst sent as separate HTTP calls lands late when the server is busy answering the blocking
        queries the previous write woke; timed here, each write lands on schedule (give or take one
        turn of the loop) however many answers are queued. Every ID is checked before the first write.
        Returns (Unix time, index) after each write.
        """
        for weights in writes:
            for service_id in weights:
                self._local_service(service_id)
        loop = asyncio.get_running_loop()
        start = loop.time()
        landed: list[tuple[float, int]] = []
        for k, weights in enumerate(writes):
            delay = start + k * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.set_weights(weights)
            landed.append((time.time(), self._catalog.index))
        return landed

    # ---- request pipeline ------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        """Faults and ACLs in front of every handler; ConsulHTTPError becomes its plain-text answer."""
        try:
            control = request.path.startswith(_CONTROL_PREFIX)
            if not control and self._fault.name in ("reset", "refuse"):
                self._abort(request)
            self._check_acl(request)
            if not control and _is_faulted_path(request.path):
                await self._read_faults(request)
            response: web.StreamResponse = await handler(request)
            return response
        except ConsulHTTPError as exc:
            return _text_response(exc.status, exc.message)

    def _abort(self, request: web.Request) -> NoReturn:
        """Reset the connection without answering; the handler task ends as cancelled."""
        transport = request.transport
        if transport is not None:
            _reset_transport(transport)
        raise asyncio.CancelledError

    def _check_acl(self, request: web.Request) -> None:
        if self._token is None:
            return
        presented = _request_token(request)
        if presented is None:
            raise ConsulHTTPError(403, "Permission denied")
        if not hmac.compare_digest(presented.encode(), self._token.encode()):
            raise ConsulHTTPError(403, "ACL not found")

    async def _read_faults(self, request: web.Request) -> None:
        if self._fault.name == "slow":
            await asyncio.sleep(self._fault.delay)
        self._raise_for_fault(request)

    def _raise_for_fault(self, request: web.Request) -> None:
        """Faults that end a (possibly pending) read now: stop, refuse, reset and the error answers."""
        fault = self._fault
        if self._stopping or fault.name in ("reset", "refuse"):
            self._abort(request)
        if fault.name in _ERROR_FAULTS:
            raise ConsulHTTPError(*_ERROR_FAULTS[fault.name])

    def _read_options(self, request: web.Request, fields: Sequence[str] = ()) -> _ReadOptions:
        """Parse what every read takes: dc, index/wait, stale/consistent, filter, pretty."""
        query = request.query
        datacenter = query.get("dc")
        if datacenter and datacenter != self._node.datacenter:
            raise ConsulHTTPError(500, "No path to datacenter")
        if "stale" in query and "consistent" in query:
            raise _bad_request("Cannot specify ?stale with ?consistent, conflicting semantics.")
        try:
            min_index = int(query.get("index") or 0)
            if min_index < 0:
                raise ValueError(min_index)
        except ValueError:
            raise _bad_request("Invalid index") from None
        try:
            wait = parse_go_duration(query["wait"]) if query.get("wait") else 0.0
        except ValueError:
            raise _bad_request("Invalid wait time") from None
        wait = DEFAULT_WAIT if wait <= 0 else min(wait, MAX_WAIT)
        predicate = None
        if query.get("filter"):
            try:
                predicate = compile_filter(query["filter"], fields)
            except FilterError as exc:
                raise _bad_request(f"Failed to create boolean expression evaluator: {exc}") from None
        consistency = "stale" if "stale" in query else "consistent" if "consistent" in query else "leader"
        return _ReadOptions(min_index, wait, consistency, "pretty" in query, predicate)

    def _compare_index(self, index: int, faulted: bool) -> int:
        if faulted and self._fault.name == "index_backwards":
            return self._reported_index(index, faulted)
        return index

    def _reported_index(self, index: int, faulted: bool) -> int:
        fault = self._fault if faulted else _NO_FAULT
        if fault.name == "index_zero":
            return 0
        if fault.name == "index_backwards":
            return max(1, index - fault.offset)
        return max(1, index)

    async def _read(
        self,
        request: web.Request,
        options: _ReadOptions,
        index_of: Callable[[], int],
        payload_of: Callable[[], Any],
    ) -> web.Response:
        """Answer a read, first holding it as a blocking query when ?index= is given."""
        faulted = _is_faulted_path(request.path)
        if options.min_index > 0:
            await self._block(request, options, index_of, faulted)
        return self._read_response(options, index_of(), payload_of(), faulted)

    async def _block(
        self, request: web.Request, options: _ReadOptions, index_of: Callable[[], int], faulted: bool
    ) -> None:
        """Wait until the query's index passes ?index=, or wait + up to wait/16 of jitter has gone by."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + options.wait + self._random.uniform(0, options.wait / _JITTER_FRACTION)
        while self._compare_index(index_of(), faulted) <= options.min_index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            wakeup = self._wakeup
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await wakeup.wait()
            if faulted:
                self._raise_for_fault(request)
            elif self._stopping:
                self._abort(request)

    def _read_response(self, options: _ReadOptions, index: int, payload: Any, faulted: bool) -> web.Response:
        fault = self._fault if faulted else _NO_FAULT
        reported = self._reported_index(index, faulted)
        self._highest_reported = max(self._highest_reported, reported)
        body = _json_bytes(payload, options.pretty)
        if fault.name == "foreign_service" and isinstance(payload, list):
            payload = [{**entry, "Service": {**entry["Service"], "Service": "intruder"}}
                       if isinstance(entry, dict) and isinstance(entry.get("Service"), dict) else entry
                       for entry in payload]
            body = _json_bytes(payload, options.pretty)
        if fault.name == "malformed_json":
            body = body[: len(body) // 2]
        elif fault.name == "huge":
            body += b" " * int(fault.size_mb * 1024 * 1024)
        headers = {
            "X-Consul-Index": str(reported),
            "X-Consul-KnownLeader": "true",
            "X-Consul-LastContact": "0",
            "X-Consul-Effective-Consistency": options.consistency,
            "X-Consul-Default-ACL-Policy": "deny" if self._token else "allow",
        }
        return web.Response(body=body, headers=headers, content_type="application/json")

    # ---- routes ----------------------------------------------------------------------------------

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.put("/v1/agent/service/register", self._h_service_register),
            web.put("/v1/agent/service/deregister/{id:.+}", self._h_service_deregister),
            web.put("/v1/agent/service/maintenance/{id:.+}", self._h_service_maintenance),
            web.get("/v1/agent/service/{id:(?!register$|deregister/|maintenance/).+}", self._h_agent_service),
            web.put("/v1/agent/maintenance", self._h_node_maintenance),
            web.put("/v1/agent/check/register", self._h_check_register),
            web.put("/v1/agent/check/deregister/{id:.+}", self._h_check_deregister),
            web.put("/v1/agent/check/pass/{id:.+}", self._h_check_pass),
            web.put("/v1/agent/check/warn/{id:.+}", self._h_check_warn),
            web.put("/v1/agent/check/fail/{id:.+}", self._h_check_fail),
            web.put("/v1/agent/check/update/{id:.+}", self._h_check_update),
            web.get("/v1/agent/services", self._h_agent_services),
            web.get("/v1/agent/checks", self._h_agent_checks),
            web.get("/v1/agent/self", self._h_agent_self),
            web.get("/v1/agent/members", self._h_agent_members),
            web.get("/v1/health/service/{name:.+}", self._h_health_service),
            web.get("/v1/health/checks/{name:.+}", self._h_health_checks),
            web.get("/v1/health/state/{state}", self._h_health_state),
            web.get("/v1/health/node/{node:.+}", self._h_health_node),
            web.get("/v1/catalog/services", self._h_catalog_services),
            web.get("/v1/catalog/service/{name:.+}", self._h_catalog_service),
            web.get("/v1/catalog/nodes", self._h_catalog_nodes),
            web.get("/v1/catalog/datacenters", self._h_catalog_datacenters),
            web.get("/v1/status/leader", self._h_status_leader),
            web.get("/v1/status/peers", self._h_status_peers),
            web.get("/v1/devconsul/fault", self._h_fault_get),
            web.put("/v1/devconsul/fault", self._h_fault_put),
            web.delete("/v1/devconsul/fault", self._h_fault_delete),
            web.put("/v1/devconsul/bulk/register", self._h_bulk_register),
            web.put("/v1/devconsul/bulk/deregister", self._h_bulk_deregister),
            web.put("/v1/devconsul/bulk/weights", self._h_bulk_weights),
            web.put("/v1/devconsul/bulk/weights-over-time", self._h_bulk_weights_over_time),
        ]

    # ---- agent handlers --------------------------------------------------------------------------

    async def _h_service_register(self, request: web.Request) -> web.Response:
        registration = decode_service_registration(await _json_body(request))
        replace_existing = request.query.get("replace-existing-checks", None) in ("", "true")
        self.register_service(registration, replace_existing_checks=replace_existing)
        return web.Response()

    async def _h_service_deregister(self, request: web.Request) -> web.Response:
        self.deregister_service(request.match_info["id"])
        return web.Response()

    async def _h_service_maintenance(self, request: web.Request) -> web.Response:
        enable = _enable_param(request)
        self.set_service_maintenance(request.match_info["id"], enable, request.query.get("reason", ""))
        return web.Response()

    async def _h_node_maintenance(self, request: web.Request) -> web.Response:
        self.set_node_maintenance(_enable_param(request), request.query.get("reason", ""))
        return web.Response()

    async def _h_check_register(self, request: web.Request) -> web.Response:
        raw = await _json_body(request)
        if not _str(_normalized(raw, "structs.CheckDefinition"), "name", "CheckDefinition.Name"):
            raise _bad_request("Missing check name")
        registration = decode_check(raw, for_service=False)
        assert registration is not None  # it has a name, so it is not empty
        self.register_check(registration)
        return web.Response()

    async def _h_check_deregister(self, request: web.Request) -> web.Response:
        self.deregister_check(request.match_info["id"])
        return web.Response()

    async def _h_check_pass(self, request: web.Request) -> web.Response:
        self._update_ttl(request.match_info["id"], PASSING, request.query.get("note", ""))
        return web.Response()

    async def _h_check_warn(self, request: web.Request) -> web.Response:
        self._update_ttl(request.match_info["id"], WARNING, request.query.get("note", ""))
        return web.Response()

    async def _h_check_fail(self, request: web.Request) -> web.Response:
        self._update_ttl(request.match_info["id"], CRITICAL, request.query.get("note", ""))
        return web.Response()

    async def _h_check_update(self, request: web.Request) -> web.Response:
        data = _normalized(await _json_body(request), "agent.checkUpdate")
        status = _str(data, "status", "checkUpdate.Status")
        if status not in _STATUSES:
            raise _bad_request(f"Invalid check status: '{status}'")
        self._update_ttl(request.match_info["id"], status, _str(data, "output", "checkUpdate.Output"))
        return web.Response()

    def _local_services(self) -> list[Service]:
        return sorted((s for s in self._catalog.services.values() if s.local), key=lambda s: s.service_id)

    async def _h_agent_services(self, request: web.Request) -> web.Response:
        options = self._read_options(request, _AGENT_SERVICE_FIELDS)
        dc = self._node.datacenter

        def payload() -> dict[str, Any]:
            items = [_agent_service_json(service, dc) for service in self._local_services()]
            return {item["ID"]: item for item in options.keep(items)}

        return self._read_response(options, self._catalog.index, payload(), faulted=False)

    async def _h_agent_service(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        service = self._catalog.services.get(request.match_info["id"])
        if service is None or not service.local:
            raise ConsulHTTPError(404, f"unknown service ID: {request.match_info['id']}")
        return self._read_response(
            options, self._catalog.index, _agent_service_json(service, self._node.datacenter), faulted=False
        )

    async def _h_agent_checks(self, request: web.Request) -> web.Response:
        options = self._read_options(request, _CHECK_FIELDS)
        local = [
            check
            for check in self._catalog.checks.values()
            if check.check_id != SERF_CHECK_ID and check.service_id != "consul"
        ]
        local.sort(key=lambda check: check.check_id)
        items = options.keep(_check_json(check, self._node) for check in local)
        payload = {item["CheckID"]: item for item in items}
        return self._read_response(options, self._catalog.index, payload, faulted=False)

    def _member_json(self) -> dict[str, Any]:
        node = self._node
        return {
            "Name": node.name,
            "Addr": node.address,
            "Port": 8301,
            "Tags": {
                "acls": "1" if self._token else "0",
                "build": f"{CONSUL_VERSION}:devconsul",
                "dc": node.datacenter,
                "id": node.node_id,
                "port": "8300",
                "raft_vsn": "3",
                "role": "consul",
                "segment": "",
                "vsn": "2",
                "vsn_max": "3",
                "vsn_min": "2",
            },
            "Status": 1,
            "ProtocolMin": 1,
            "ProtocolMax": 5,
            "ProtocolCur": 2,
            "DelegateMin": 2,
            "DelegateMax": 5,
            "DelegateCur": 4,
        }

    async def _h_agent_self(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        node = self._node
        payload = {
            "Config": {
                "Datacenter": node.datacenter,
                "PrimaryDatacenter": node.datacenter,
                "NodeName": node.name,
                "NodeID": node.node_id,
                "Server": True,
                "Revision": "devconsul",
                "Version": CONSUL_VERSION,
                "BuildDate": "",
                "NodeAddress": node.address,
            },
            "Coord": None,
            "Member": self._member_json(),
            "Stats": {
                "consul": {"leader": "true", "server": "true", "known_datacenters": "1"},
                "agent": {
                    "services": str(len(self._local_services())),
                    "checks": str(len(self._catalog.checks) - 1),
                },
            },
            "Meta": {"consul-network-segment": ""},
        }
        return self._read_response(options, self._catalog.index, payload, faulted=False)

    async def _h_agent_members(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        return self._read_response(options, self._catalog.index, [self._member_json()], faulted=False)

    # ---- health and catalog handlers -------------------------------------------------------------

    def _health_entry(self, service: Service) -> dict[str, Any]:
        checks = self._catalog.checks_of("") + self._catalog.checks_of(service.service_id)
        return {
            "Node": _node_json(self._node),
            "Service": _service_json(service),
            "Checks": [_check_json(check, self._node) for check in checks],
        }

    def _node_meta_matches(self, request: web.Request) -> bool:
        meta = _node_json(self._node)["Meta"]
        for pair in request.query.getall("node-meta", []):
            key, _, value = pair.partition(":")
            if meta.get(key) != value:
                return False
        return True

    async def _h_health_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        options = self._read_options(request, _HEALTH_FIELDS)
        passing = _passing_param(request)
        tags = request.query.getall("tag", [])
        node_ok = self._node_meta_matches(request)

        def payload() -> list[dict[str, Any]]:
            instances = [s for s in self._catalog.instances(name) if _has_tags(s, tags)] if node_ok else []
            entries = [self._health_entry(service) for service in instances]
            return options.keep(entry for entry in entries if not passing or _all_passing(entry))

        return await self._read(request, options, lambda: self._catalog.health_index(name), payload)

    async def _h_health_checks(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        options = self._read_options(request, _CHECK_FIELDS)

        def payload() -> list[dict[str, Any]]:
            checks = [
                check
                for service in self._catalog.instances(name)
                for check in self._catalog.checks_of(service.service_id)
            ]
            return options.keep(_check_json(check, self._node) for check in checks)

        return await self._read(request, options, lambda: self._catalog.health_index(name), payload)

    async def _h_health_state(self, request: web.Request) -> web.Response:
        state = request.match_info["state"]
        if state not in (*_STATUSES, "any"):
            raise _bad_request("Bad check state")
        options = self._read_options(request, _CHECK_FIELDS)

        def payload() -> list[dict[str, Any]]:
            checks = sorted(self._catalog.checks.values(), key=lambda c: (c.service_id, c.check_id))
            return options.keep(_check_json(c, self._node) for c in checks if state in ("any", c.status))

        return await self._read(request, options, lambda: self._catalog.table_index("checks"), payload)

    async def _h_health_node(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        options = self._read_options(request, _CHECK_FIELDS)

        def payload() -> list[dict[str, Any]]:
            if node not in (self._node.name, self._node.node_id):
                return []
            checks = sorted(self._catalog.checks.values(), key=lambda c: (c.service_id, c.check_id))
            return options.keep(_check_json(check, self._node) for check in checks)

        return await self._read(request, options, lambda: self._catalog.table_index("checks"), payload)

    async def _h_catalog_services(self, request: web.Request) -> web.Response:
        options = self._read_options(request, _CATALOG_SERVICE_FIELDS)
        node_ok = self._node_meta_matches(request)

        def payload() -> dict[str, list[str]]:
            services = sorted(self._catalog.services.values(), key=lambda s: (s.name, s.service_id))
            kept = options.keep(_catalog_service_json(s, self._node) for s in services) if node_ok else []
            names: dict[str, list[str]] = {}
            for item in kept:
                tags = names.setdefault(item["ServiceName"], [])
                tags.extend(tag for tag in item["ServiceTags"] if tag not in tags)
            return {name: sorted(tags) for name, tags in names.items()}

        return await self._read(request, options, lambda: self._catalog.table_index("services"), payload)

    async def _h_catalog_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        options = self._read_options(request, _CATALOG_SERVICE_FIELDS)
        tags = request.query.getall("tag", [])
        node_ok = self._node_meta_matches(request)

        def payload() -> list[dict[str, Any]]:
            instances = [s for s in self._catalog.instances(name) if _has_tags(s, tags)] if node_ok else []
            return options.keep(_catalog_service_json(service, self._node) for service in instances)

        return await self._read(request, options, lambda: self._catalog.table_index(_catalog_table(name)), payload)

    async def _h_catalog_nodes(self, request: web.Request) -> web.Response:
        options = self._read_options(request, _NODE_FIELDS)
        node_ok = self._node_meta_matches(request)
        return await self._read(
            request,
            options,
            lambda: self._catalog.table_index("nodes"),
            lambda: options.keep([_node_json(self._node)] if node_ok else []),
        )

    async def _h_catalog_datacenters(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        return self._read_response(options, self._catalog.index, [self._node.datacenter], faulted=True)

    async def _h_status_leader(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        return self._read_response(options, self._catalog.index, f"{self._node.address}:8300", faulted=True)

    async def _h_status_peers(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        return self._read_response(options, self._catalog.index, [f"{self._node.address}:8300"], faulted=True)

    # ---- fault control ---------------------------------------------------------------------------

    def _fault_json(self) -> dict[str, Any]:
        fault = self._fault
        params = {key: value for key, value in dataclasses.asdict(fault).items() if key != "name" and value}
        return {"fault": fault.name or None, **params}

    async def _h_fault_get(self, request: web.Request) -> web.Response:
        return web.json_response(self._fault_json())

    async def _h_fault_put(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        if not isinstance(data, dict) or not isinstance(data.get("fault"), str):
            raise _bad_request('devconsul: body must be {"fault": "<name>", ...params}')
        params = {key: value for key, value in data.items() if key != "fault"}
        try:
            fault = make_fault(data["fault"], params, self._highest_reported)
        except ValueError as exc:
            raise _bad_request(f"devconsul: {exc}") from None
        response = web.json_response({"fault": fault.name, **params})
        if fault.name in ("refuse", "reset"):
            response.force_close()  # this connection closes after the answer instead of being reset
        self._switch_fault(fault, spare=request.transport)
        return response

    async def _h_fault_delete(self, request: web.Request) -> web.Response:
        self._switch_fault(_NO_FAULT, spare=request.transport)
        return web.json_response(self._fault_json())

    # ---- bulk control (benchmarks) ---------------------------------------------------------------

    async def _h_bulk_register(self, request: web.Request) -> web.Response:
        """PUT a JSON array of /v1/agent/service/register bodies: one catalog write for all of them."""
        data = await _json_body(request)
        if not isinstance(data, list):
            raise _bad_request("devconsul: body must be a JSON array of service registrations")
        count = self.register_services([decode_service_registration(item) for item in data])
        return web.json_response({"registered": count, "index": self._catalog.index})

    async def _h_bulk_deregister(self, request: web.Request) -> web.Response:
        """PUT a JSON array of service IDs: one catalog write removes them all."""
        data = await _json_body(request)
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            raise _bad_request("devconsul: body must be a JSON array of service IDs")
        count = self.deregister_services(data)
        return web.json_response({"deregistered": count, "index": self._catalog.index})

    async def _h_bulk_weights(self, request: web.Request) -> web.Response:
        """PUT ``{"<service id>": {"Passing": n, "Warning": m}, ...}``: one catalog write for all of them."""
        data = await _json_body(request)
        if not isinstance(data, dict):
            raise _bad_request('devconsul: body must be {"<service id>": {"Passing": n, "Warning": m}, ...}')
        weights = {str(service_id): _decode_weights(value) for service_id, value in data.items()}
        changed = self.set_weights(weights)
        return web.json_response({"changed": changed, "index": self._catalog.index})

    async def _h_bulk_weights_over_time(self, request: web.Request) -> web.Response:
        """PUT ``{"interval": seconds, "writes": [{"<id>": {"Passing": n, "Warning": m}, ...}, ...]}``.

        Answers once the last write landed, with the Unix time and index of each.
        """
        data = await _json_body(request)
        usage = 'devconsul: body must be {"interval": seconds, "writes": [{"<id>": {"Passing": n, ...}}, ...]}'
        if not isinstance(data, dict) or not isinstance(data.get("writes"), list):
            raise _bad_request(usage)
        interval = data.get("interval", 0)
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 <= interval <= 60:
            raise _bad_request("devconsul: interval must be a number of seconds between 0 and 60")
        writes = []
        for item in data["writes"]:
            if not isinstance(item, dict):
                raise _bad_request(usage)
            writes.append({str(service_id): _decode_weights(value) for service_id, value in item.items()})
        landed = await self.set_weights_over_time(writes, float(interval))
        return web.json_response({"writes": [{"time": when, "index": index} for when, index in landed]})


# --------------------------------------------------------------------------------------------------
# Synchronous use: a DevConsul on its own event loop in a daemon thread.


class DevConsulThread:
    """Runs a DevConsul on its own event loop in a daemon thread, for synchronous tests and the sandbox."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._server: DevConsul | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> DevConsulThread:
        """Start serving; returns once listening, raises what start() raised (e.g. port in use)."""
        if self._thread is not None:
            raise RuntimeError("DevConsulThread already started")
        self._thread = threading.Thread(target=self._main, name="devconsul", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("devconsul did not start within 30 s")
        if self._error is not None:
            self._thread.join(timeout=5)
            raise self._error
        return self

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        try:
            server = DevConsul(**self._kwargs)
            await server.start()
        except BaseException as exc:  # handed to the thread that called start()
            self._error = exc
            self._ready.set()
            return
        self._server = server
        self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            await server.stop()

    def stop(self) -> None:
        """Stop the server and join the thread; safe to call twice or before start()."""
        thread, loop, event = self._thread, self._loop, self._stop_requested
        if thread is None or not thread.is_alive():
            return
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop may already be closing
                loop.call_soon_threadsafe(event.set)
        thread.join(timeout=10)

    def __enter__(self) -> DevConsulThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a DevConsul method on its loop and hand back its result or exception."""
        loop = self._loop
        if loop is None or self._server is None:
            raise RuntimeError("DevConsulThread is not running")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=10)

    @property
    def server(self) -> DevConsul:
        if self._server is None:
            raise RuntimeError("DevConsulThread is not running")
        return self._server

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def index(self) -> int:
        return int(self._call(lambda: self.server.index))

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a DevConsul method (``deregister_service``, ...) on its loop, from any thread: catalog
        writes that work even while a fault such as ``refuse`` blocks the HTTP API."""
        return self._call(getattr(self.server, method), *args, **kwargs)

    def set_fault(self, name: str, **params: Any) -> None:
        self._call(self.server.set_fault, name, **params)

    def clear_fault(self) -> None:
        self._call(self.server.clear_fault)


# --------------------------------------------------------------------------------------------------
# Command line.


def _ensure_stderr_logging() -> None:
    """Make sure INFO lines reach stderr when nobody configured logging (python -m, the sandbox)."""
    if not _log.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        _log.addHandler(handler)
    if _log.getEffectiveLevel() > logging.INFO:
        _log.setLevel(logging.INFO)


async def _serve_until_signal(host: str, port: int, token: str | None) -> None:
    server = DevConsul(host, port, token=token)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    _log.info("devconsul listening on %s", server.url)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await server.stop()


def run_forever(host: str, port: int, *, token: str | None = None) -> None:
    """Serve until SIGINT/SIGTERM; logs one line 'devconsul listening on http://...' to stderr."""
    _ensure_stderr_logging()
    asyncio.run(_serve_until_signal(host, port, token))


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m haproxy_sync.devconsul [--host H] [--port P]`; the token comes from DEVCONSUL_TOKEN."""
    parser = argparse.ArgumentParser(prog="devconsul", description="A Consul HTTP API for development.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    args = parser.parse_args(argv)
    run_forever(args.host, args.port, token=os.environ.get("DEVCONSUL_TOKEN") or None)


if __name__ == "__main__":
    main()
