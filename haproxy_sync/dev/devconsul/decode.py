"""Decoding register bodies, and ConsulHTTPError, the plain-text answer a bad one gets.

Go's JSON decoder matches keys case-insensitively and Consul also translates snake_case, so py-consul's
{"name": ..., "enable_tag_override": ...} is as valid as the docs' {"Name": ...}. Wrong types give Go's
error text.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

from haproxy_sync.dev.devconsul.records import (
    _DEFAULT_CHECK_TIMEOUT,
    _STATUSES,
    CheckDefinition,
    CheckRegistration,
    Service,
    ServiceRegistration,
    TaggedAddress,
)
from haproxy_sync.durations import parse_go_duration

_SCRIPTS_DISABLED: Final = (
    "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or "
    "'enable_local_script_checks' to true"
)


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
