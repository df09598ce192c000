"""The JSON Consul answers with (field names and casing from its docs and Go structs).

The ``_*_FIELDS`` tuples are the top-level keys of each view: what a ?filter= selector may start with.
"""

from __future__ import annotations

import base64
from typing import Any, Final

from haproxy_sync.dev.devconsul.records import (
    PASSING,
    Check,
    CheckDefinition,
    KVEntry,
    Node,
    Pairs,
    Service,
)
from haproxy_sync.durations import format_go_duration


def _pairs_json(pairs: Pairs | None) -> dict[str, str] | None:
    """A Go map[string]string: null where Consul holds a nil map."""
    return None if pairs is None else dict(pairs)


def _node_json(node: Node) -> dict[str, Any]:
    """Consul's Node (catalog/nodes, health entries, catalog/node)."""
    return {
        "ID": node.node_id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": _pairs_json(node.tagged_addresses),
        "Meta": _pairs_json(node.meta),
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
    if definition.kind in ("http", "tcp") or (definition.kind == "catalog" and definition.timeout):
        out["Timeout"] = format_go_duration(definition.timeout)
    if definition.deregister_critical_after:
        out["DeregisterCriticalServiceAfter"] = format_go_duration(definition.deregister_critical_after)
    return out


def _check_type(definition: CheckDefinition) -> str:
    if definition.kind == "catalog":
        return definition.type_name
    return "" if definition.kind in ("serf", "") else definition.kind


def _check_json(check: Check) -> dict[str, Any]:
    """Consul's HealthCheck."""
    definition = check.definition
    agent_run = definition.kind != "catalog"
    return {
        "Node": check.node,
        "CheckID": check.check_id,
        "Name": check.name,
        "Status": check.status,
        "Notes": check.notes,
        "Output": check.output,
        "ServiceID": check.service_id,
        "ServiceName": check.service_name,
        "ServiceTags": list(check.service_tags),
        "Type": _check_type(definition),
        # a catalog-registered check keeps its timing in Definition only (the agent fills these for its own)
        "Interval": format_go_duration(definition.interval) if definition.interval and agent_run else "",
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
        "TaggedAddresses": _pairs_json(node.tagged_addresses),
        "NodeMeta": _pairs_json(node.meta),
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


def _kv_json(entry: KVEntry) -> dict[str, Any]:
    """Consul's DirEntry: the value base64 (null for a nil one), LockIndex 0 (no sessions here)."""
    return {
        "LockIndex": 0,
        "Key": entry.key,
        "Flags": entry.flags,
        "Value": None if entry.value is None else base64.b64encode(entry.value).decode(),
        "CreateIndex": entry.create_index,
        "ModifyIndex": entry.modify_index,
    }


_HEALTH_FIELDS: Final = ("Node", "Service", "Checks")
_CHECK_FIELDS: Final = tuple(_check_json(Check("", "", PASSING)))
_NODE_FIELDS: Final = tuple(_node_json(Node("", "", "", "")))
_CATALOG_SERVICE_FIELDS: Final = tuple(_catalog_service_json(Service("", ""), Node("", "", "", "")))
_AGENT_SERVICE_FIELDS: Final = (*_agent_service_json(Service("", ""), ""), "TaggedAddresses")
