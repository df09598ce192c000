"""Decoding /v1/catalog/register and /v1/catalog/deregister bodies (Consul's RegisterRequest and
DeregisterRequest), with the checks Consul makes before it vets ACLs.

Why a module of its own: a catalog registration is not an agent registration. It names a node (an
external one, as ESM or Nomad-style registrations do) with its Address, TaggedAddresses and NodeMeta
taken as given (no lan/wan addresses derived, nil maps stay null), a NodeService whose Weights default
to 1/1 and whose invalid Weights are replaced by the default (structs.NodeService.ToServiceNode), and
HealthChecks nobody runs: they hold the Status the caller wrote (critical when none), until the caller
writes another. What Consul validates (agent/consul/catalog_endpoint.go Register: nodePreApply,
servicePreApply, checkPreApply) is validated here with its messages; Consul answers them as errors of
the RPC, so HTTP 500.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from haproxy_sync.dev.devconsul.decode import (
    ConsulHTTPError,
    _bool,
    _decode_tagged_addresses,
    _duration,
    _int,
    _is_unspecified_address,
    _normalized,
    _str,
    _str_list,
    _str_map,
    _type_error,
)
from haproxy_sync.dev.devconsul.records import CRITICAL, Check, CheckDefinition, Node, Pairs, Service

_HEX: Final = re.compile(r"[0-9a-fA-F]*")


@dataclass(frozen=True)
class CatalogRegistration:
    """A decoded RegisterRequest: the node, at most one service, the checks (each naming its node)."""

    node: Node
    skip_node_update: bool
    service: Service | None
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class CatalogDeregistration:
    """A decoded DeregisterRequest: the whole node unless a ServiceID or a CheckID is given."""

    node: str
    service_id: str
    check_id: str


def _fail(message: str) -> ConsulHTTPError:
    """An error of Consul's Catalog RPC: the HTTP API answers it as a 500 with its text."""
    return ConsulHTTPError(500, message)


def _check_uuid(node_id: str) -> None:
    """go-uuid ParseUUID's checks, as nodePreApply makes them ("Bad node ID: ...")."""
    if len(node_id) != 36:
        raise _fail("Bad node ID: uuid string is wrong length")
    if any(node_id[at] != "-" for at in (8, 13, 18, 23)):
        raise _fail("Bad node ID: uuid is improperly formatted")
    digits = node_id[0:8] + node_id[9:13] + node_id[14:18] + node_id[19:23] + node_id[24:36]
    bad = _HEX.match(digits)
    if bad is not None and bad.end() != len(digits):
        char = digits[bad.end()]
        raise _fail(f"Bad node ID: encoding/hex: invalid byte: U+{ord(char):04X} {char!r}")


def _weights(raw: Any) -> tuple[int, int]:
    """ToServiceNode: the given Weights when valid (Passing > 0, Warning >= 0), else the default 1/1."""
    if raw is None:
        return (1, 1)
    data = _normalized(raw, "structs.Weights")
    passing = _int(data, "passing", "RegisterRequest.Service.Weights.Passing")
    warning = _int(data, "warning", "RegisterRequest.Service.Weights.Warning")
    return (passing, warning) if passing > 0 and warning >= 0 else (1, 1)


def _decode_service(raw: Any) -> Service | None:
    """servicePreApply: ID defaults to the name; an ID without a name, or a 0.0.0.0 address, is refused."""
    if raw is None:
        return None
    data = _normalized(raw, "structs.NodeService")
    where = "RegisterRequest.Service"
    name = _str(data, "service", f"{where}.Service")
    service_id = _str(data, "id", f"{where}.ID") or name
    if not name:
        raise _fail("Must provide service name (Service.Service) when service ID is provided")
    address = _str(data, "address", f"{where}.Address")
    if _is_unspecified_address(address):
        raise _fail("Invalid service address")
    port = _int(data, "port", f"{where}.Port")
    tagged = data.get("taggedaddresses")
    return Service(
        service_id=service_id,
        name=name,
        tags=_str_list(data, "tags", f"{where}.Tags"),
        address=address,
        port=port,
        meta=_str_map(data, "meta", f"{where}.Meta"),
        weights=_weights(data.get("weights")),
        enable_tag_override=_bool(data, "enabletagoverride", f"{where}.EnableTagOverride"),
        # no lan/wan addresses are derived here: that is the agent's doing, not the catalog's
        tagged_addresses=_decode_tagged_addresses(tagged, "", 0) if tagged is not None else (),
        kind=_str(data, "kind", f"{where}.Kind"),
        local=False,
    )


def _check_type(given: str, definition: Mapping[str, Any], interval: float, ttl: float) -> str:
    """The Type Consul fills in for a check registered in the catalog directly (CheckType.Type())."""
    if given:
        return given
    for kind in ("grpc", "http"):
        if definition.get(kind) and interval > 0:
            return kind
    if ttl > 0:
        return "ttl"
    return "tcp" if definition.get("tcp") and interval > 0 else ""


def _decode_check(raw: Any, node: str) -> tuple[str, Check]:
    """One HealthCheck: (the node it names, the check). checkPreApply: CheckID defaults to the Name."""
    data = _normalized(raw, "structs.HealthCheck")
    where = "RegisterRequest.Check"
    check_id = _str(data, "checkid", f"{where}.CheckID") or _str(data, "name", f"{where}.Name")
    if not check_id:
        raise ConsulHTTPError(400, "devconsul: a catalog check needs a CheckID or a Name")
    definition_raw = data.get("definition")
    definition = _normalized(definition_raw, "structs.HealthCheckDefinition") if definition_raw is not None else {}
    dwhere = f"{where}.Definition"
    interval = _duration(definition, "interval", f"{dwhere}.Interval")
    ttl = _duration(definition, "ttl", f"{dwhere}.TTL")
    return _str(data, "node", f"{where}.Node") or node, Check(
        check_id=check_id,
        name=_str(data, "name", f"{where}.Name"),
        status=_str(data, "status", f"{where}.Status") or CRITICAL,
        notes=_str(data, "notes", f"{where}.Notes"),
        output=_str(data, "output", f"{where}.Output"),
        service_id=_str(data, "serviceid", f"{where}.ServiceID"),
        definition=CheckDefinition(
            "catalog",
            http=_str(definition, "http", f"{dwhere}.HTTP"),
            method=_str(definition, "method", f"{dwhere}.Method"),
            tcp=_str(definition, "tcp", f"{dwhere}.TCP"),
            interval=interval,
            timeout=_duration(definition, "timeout", f"{dwhere}.Timeout"),
            ttl=ttl,
            type_name=_check_type(_str(data, "type", f"{where}.Type"), definition, interval, ttl),
        ),
    )


def _pairs(data: Mapping[str, Any], key: str, where: str) -> Pairs | None:
    value = _str_map(data, key, where)
    return None if value is None else tuple(sorted(value))


def decode_catalog_registration(raw: Any, datacenter: str) -> tuple[CatalogRegistration, list[str]]:
    """Decode and validate a RegisterRequest; also returns the node each check names (for the ACL vet,
    which refuses a check of another node). ``datacenter``: the agent's, the default."""
    data = _normalized(raw, "structs.RegisterRequest")
    name = _str(data, "node", "RegisterRequest.Node")
    node_id = _str(data, "id", "RegisterRequest.ID")
    given_dc = _str(data, "datacenter", "RegisterRequest.Datacenter")
    if given_dc and given_dc != datacenter:
        raise ConsulHTTPError(500, "No path to datacenter")
    if not name:
        raise _fail("Must provide node")
    if node_id:
        _check_uuid(node_id)
    skip = _bool(data, "skipnodeupdate", "RegisterRequest.SkipNodeUpdate")
    address = _str(data, "address", "RegisterRequest.Address")
    if not address and not skip:
        raise _fail("Must provide address if SkipNodeUpdate is not set")
    node = Node(
        node_id=node_id,
        name=name,
        address=address,
        datacenter=given_dc or datacenter,
        tagged_addresses=_pairs(data, "taggedaddresses", "RegisterRequest.TaggedAddresses"),
        meta=_pairs(data, "nodemeta", "RegisterRequest.NodeMeta"),
    )
    service = _decode_service(data.get("service"))
    raw_checks: list[Any] = [data["check"]] if data.get("check") is not None else []
    if data.get("checks") is not None:
        if not isinstance(data["checks"], list):
            raise _type_error(data["checks"], "RegisterRequest.Checks", "structs.HealthChecks")
        raw_checks.extend(data["checks"])
    decoded = [_decode_check(item, name) for item in raw_checks]
    registration = CatalogRegistration(node, skip, service, tuple(check for _, check in decoded))
    return registration, [check_node for check_node, _ in decoded]


def decode_catalog_deregistration(raw: Any, datacenter: str) -> CatalogDeregistration:
    """Decode a DeregisterRequest ("Must provide node" without one)."""
    data = _normalized(raw, "structs.DeregisterRequest")
    given_dc = _str(data, "datacenter", "DeregisterRequest.Datacenter")
    if given_dc and given_dc != datacenter:
        raise ConsulHTTPError(500, "No path to datacenter")
    node = _str(data, "node", "DeregisterRequest.Node")
    if not node:
        raise _fail("Must provide node")
    return CatalogDeregistration(
        node, _str(data, "serviceid", "DeregisterRequest.ServiceID"), _str(data, "checkid", "DeregisterRequest.CheckID")
    )
