"""Faults: what can go wrong with a real Consul, on demand, so the client's handling can be tested."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final


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
    "null_body": "reads answer 200 with the JSON `null` (and an index)",
    "wrong_shape": "reads answer the other JSON shape: a list as an object {\"Entries\": [...]}, an object as a list",
    "not_found": "reads answer 404 with an X-Consul-Index (as a proxy or a broken Consul might)",
    "not_found_bare": "reads answer 404 without an X-Consul-Index",
    "html": "reads answer 200 with an HTML page (a captive portal, a load balancer's error page)",
    "bad_encoding": "reads answer 200 with Content-Encoding: gzip over a body that is not gzip",
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
