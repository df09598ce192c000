"""Go's durations (``time.ParseDuration``), the one implementation for settings and devconsul alike.

Consul writes every duration this way (``wait=5m``, an ``Interval`` of ``"10s"``), and so does
consul-template's config (``wait { min = "1m30s" }``): an operator moving from either writes
``1m30s``, ``1.5s`` or ``250ms`` and must get what Go would give, not a refusal or another number.
Pure functions, no imports from the rest of the package: devconsul and the settings both use them.
"""

from __future__ import annotations

import re
from typing import Final

_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # Go accepts the micro sign
    "μs": 1e-6,  # ... and the Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART: Final = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_BARE_NUMBER: Final = re.compile(r"\d+\.?\d*|\.\d+")


def parse_go_duration(text: str) -> float:
    """The seconds in a Go duration string (``"1m30s"`` is 90.0), raising ValueError with Go's own
    message (``time: missing unit in duration "10"``): a sign, then one or more number-unit pairs,
    or a bare ``0``."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text[1:] if text[:1] in ("+", "-") else text
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    total, pos = 0.0, 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            if _BARE_NUMBER.fullmatch(body, pos):
                raise ValueError(f'time: missing unit in duration "{text}"')
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def _trim_float(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


def format_go_duration(seconds: float) -> str:
    """Write seconds the way Go's ``time.Duration.String()`` does (``"10s"``, ``"100ms"``, ``"1m30s"``):
    what Consul answers for a check's Interval, and what a log line says a setting is."""
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
