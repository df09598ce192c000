"""The value parsers of the settings: each returns the typed value or raises ``ValueError`` saying
what is allowed. ``config`` names one for every key; they know nothing of where a value came from
(the loader adds the file and key, environment variable or flag to the message).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from haproxy_sync import rules
from haproxy_sync.durations import parse_go_duration

_BARE_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)", re.ASCII)
_BIND = re.compile(r"^(\*|[A-Za-z0-9.:\[\]-]*):(\d{1,5})\Z", re.ASCII)


def _kind(value: Any) -> str:
    """A value's TOML type as an operator reads it, for "expected X, got Y" messages."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value:g})"
    if isinstance(value, str):
        return f"a string ({value[:80]!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def parse_duration(value: Any) -> float:
    """Seconds from a Go duration (``"250ms"``, ``"1m30s"``, ``"1.5s"``, ``"1h"``: what Consul and
    consul-template write) or a TOML number of seconds; a bare number in a string has no unit, as in Go."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as \"250ms\", \"1m30s\" or \"5m\", not true/false")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = parse_go_duration(text)
        except ValueError:
            if _BARE_NUMBER.fullmatch(text):
                raise ValueError(f"{value!r} has no unit; write e.g. \"{text}s\" or \"{text}ms\"") from None
            raise ValueError(f"{value!r} is not a duration; use e.g. \"250ms\", \"1m30s\" or \"5m\"") from None
    else:
        raise ValueError(f"expected a duration such as \"250ms\" or \"1m30s\", got {_kind(value)}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_one_of(choices: Sequence[str]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).lower()
        if text not in choices:
            raise ValueError(f"{value!r} is not one of: {', '.join(choices)}")
        return text

    return parse


def parse_string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def parse_path_or_none(value: Any) -> Path | None:
    text = parse_string(value)
    return Path(text) if text else None


def parse_path(value: Any) -> Path:
    text = parse_string(value)
    if not text:
        raise ValueError("a path is required")
    return Path(text)


def parse_haproxy_path(value: Any) -> Path:
    """A path HAProxy reads from haproxy.cfg or is told on its CLI: a space, a quote or a ``#`` there
    would split the line or the command, so only the characters of ``rules.file_path``."""
    path = parse_path(value)
    try:
        rules.file_path(str(path))
    except rules.Refused:
        raise ValueError(f"{str(path)[:200]!r} is not an absolute path of A-Z a-z 0-9 . _ / + - (no spaces, no ..): "
                         "HAProxy reads it from haproxy.cfg or its CLI") from None
    return path


def parse_haproxy_path_or_none(value: Any) -> Path | None:
    return parse_haproxy_path(value) if parse_string(value) else None


def parse_bool(value: Any) -> bool:
    """true/false; a string only as the environment writes it (``CONSUL_HTTP_SSL=true``). A number is
    refused: ``1`` for ``true`` is a guess about what the writer meant, and the loader does not guess."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected true or false, got {_kind(value)}")
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not a boolean; use true or false")


def parse_int_range(low: int, high: int) -> Callable[[Any], int]:
    """A TOML integer in ``low``-``high``. A float is refused rather than truncated (``slots = 8.5`` is
    a typo or a misunderstanding, and ``int()`` would hide either), and so are a string of digits and a
    boolean (Python's ``True`` is an int; a config's is not)."""

    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            hint = f"write a whole number, e.g. {low if low > 0 else 1}"
            if isinstance(value, float) and value.is_integer():
                hint = f"write {int(value)}, without the decimal point"
            elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
                hint = f"write {value.strip()}, without quotes"
            raise ValueError(f"expected an integer in {low}-{high}, got {_kind(value)}; {hint}")
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}-{high}")
        return value

    return parse


def parse_argv(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValueError("expected a list of arguments, e.g. [\"systemctl\", \"reload\", \"haproxy\"]")
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of non-empty strings")
    return tuple(value)


def parse_octal_mode(value: Any) -> int:
    """A file mode as a string (``"0640"``): TOML's ``0o640`` is an integer and ``640`` a decimal one,
    and taking either as octal digits would give another mode than the one meant."""
    if not isinstance(value, str):
        raise ValueError(f"expected an octal file mode as a string, got {_kind(value)}; write e.g. \"0640\"")
    text = value.strip()
    if not re.fullmatch(r"0?[0-7]{3}", text):
        raise ValueError(f"{value!r} is not an octal file mode such as \"0640\"")
    mode = int(text, 8)
    if mode & 0o002:
        raise ValueError(f"{value!r} makes haproxy.cfg writable by everyone; use e.g. \"0640\"")
    return mode


_CANARY_SHARE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,4})?%?", re.ASCII)


def parse_percent(value: Any) -> float:
    """A share as ``"50%"`` or a number of percent (``50``); a boolean is no share."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a percentage such as \"50%\", got {_kind(value)}")
    text = str(value).strip()
    number = text[:-1] if text.endswith("%") else text
    try:
        share = float(number)
    except ValueError:
        raise ValueError(f"{value!r} is not a percentage such as \"50%\"") from None
    if not 0 <= share <= 100:
        raise ValueError(f"{value!r} is not a percentage between 0% and 100%")
    return share / 100


def parse_bind(value: Any) -> str:
    text = parse_string(value)
    match = _BIND.match(text)
    if not match or not 1 <= int(match.group(2)) <= 65535:
        raise ValueError(f"{text!r} is not ADDRESS:PORT (e.g. \"*:80\" or \"127.0.0.1:8404\")")
    return text


def parse_listen(value: Any) -> str:
    text = parse_string(value)
    return parse_bind(text) if text else ""


def parse_consul_address(value: Any) -> str:
    """Consul's ``CONSUL_HTTP_ADDR`` forms (``host:port``, ``http(s)://host:port``, and
    ``unix:///path/to/socket`` for an agent serving HTTP on a unix socket) as one base URL."""
    text = parse_string(value).strip()
    if not text:
        raise ValueError("an address is required, e.g. \"http://127.0.0.1:8500\"")
    if text.startswith("unix://"):
        path = text[len("unix://"):]
        if not path.startswith("/") or any(ord(ch) < 0x20 for ch in path) or len(path) > 107:
            raise ValueError(f"{text[:200]!r} is not unix:///absolute/path (an absolute socket path, at most "
                             "107 bytes)")
        return f"unix://{path}"
    parsed = urllib.parse.urlsplit(text if "://" in text else f"http://{text}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{text!r} is not host:port, http(s)://host:port or unix:///path/to/socket")
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 8500)
    except ValueError:
        raise ValueError(f"{text!r} has an invalid port") from None
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{parsed.scheme}://{host}:{port}"


_ENTERPRISE_NAME = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?", re.ASCII)


def parse_enterprise_name(value: Any) -> str:
    """A Consul Enterprise namespace or admin partition name (DNS-label-like, as Consul validates them),
    or empty for none; it travels as a query parameter, so nothing else may reach the URL."""
    text = parse_string(value).strip()
    if text and not _ENTERPRISE_NAME.fullmatch(text):
        raise ValueError(f"{text[:80]!r} is not a Consul namespace or partition name: letters, digits and "
                         "dashes, at most 63")
    return text


def parse_basic_auth(value: Any) -> str:
    """``user:password`` for HTTP basic auth, as ``CONSUL_HTTP_AUTH`` writes it (a user alone is a user
    with an empty password, as in Consul's client); never shown back, not even in an error."""
    text = parse_string(value)
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise ValueError("holds a control character or a line break; it is user:password on one line")
    if text.startswith(":"):
        raise ValueError("has an empty user name; write user:password")
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("holds characters HTTP basic auth cannot carry (outside Latin-1)") from None
    return text


def parse_networks(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if isinstance(value, str):  # from the environment: comma-separated
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list):
        raise ValueError('expected a list of CIDR networks, e.g. ["10.0.0.0/8"]')
    return tuple(rules.network(item) for item in value)


def parse_host_patterns(value: Any) -> tuple[str, ...]:
    """A list of host patterns (``*``, ``*.suffix``, or a host name), each checked by its allowlist."""
    if not isinstance(value, list) or not value:
        raise ValueError('expected a non-empty list of host patterns, e.g. ["*.branches.example.com"]')
    return tuple(rules.host_pattern(item) for item in value)


def parse_tag(value: Any) -> str:
    text = parse_string(value)
    if not text or len(text) > 100 or any(ch.isspace() for ch in text):
        raise ValueError(f"{text[:80]!r} must be a Consul tag: 1-100 characters, no spaces")
    return text


def parse_tag_or_none(value: Any) -> str:
    """A Consul tag, or "" for none."""
    return parse_tag(value) if parse_string(value) else ""


def parse_canary_share(value: Any) -> float:
    """A canary's share of requests, ``0%`` (none: only requests that ask for it) to below ``100%``
    (all of them is a promotion, not a share). Strict (digits, an optional fraction and ``%``), since a
    discovered service's share is Consul meta that anyone registering a service writes."""
    if isinstance(value, str) and not _CANARY_SHARE.fullmatch(value):
        raise ValueError(f"{value!r} is not a percentage such as \"10%\" or \"2.5%\"")
    share = parse_percent(value)
    if share >= 1:
        raise ValueError(f"{value!r}: a canary share is below 100% (sending everything to the canaries is promoting "
                         "them)")
    return share


def parse_header_name_or_none(value: Any) -> str:
    """An HTTP header name (``X-Canary``), or "" for none."""
    return str(rules.header_name(value)) if parse_string(value) else ""


_ALPN = ("h2", "http/1.1", "http/1.0")
_CIPHERS = re.compile(r"[A-Za-z0-9_+-]{1,60}(?::[A-Za-z0-9_+-]{1,60}){0,40}", re.ASCII)
_TLS_VERSIONS = {"tlsv1.2": "TLSv1.2", "tlsv1.3": "TLSv1.3"}


def parse_alpn(value: Any) -> str:
    """ALPN protocols, comma-separated, from h2, http/1.1 and http/1.0 (``h2,http/1.1``)."""
    text = parse_string(value)
    protocols = text.split(",")
    unknown = [p for p in protocols if p not in _ALPN]
    if not text or unknown or len(set(protocols)) != len(protocols):
        raise ValueError(f"{text!r} is not a comma-separated list of {', '.join(_ALPN)} (each once)")
    return text


def parse_ciphers(value: Any) -> str:
    """An OpenSSL cipher or TLS 1.3 ciphersuite list: names joined by ``:``."""
    text = parse_string(value)
    if not _CIPHERS.fullmatch(text):
        raise ValueError(f"{text[:80]!r} is not an OpenSSL cipher list (names of A-Z a-z 0-9 _ + - joined by ':')")
    return text


def parse_tls_version(value: Any) -> str:
    text = parse_string(value)
    if text.lower() not in _TLS_VERSIONS:
        raise ValueError(f"{text!r} is not TLSv1.2 or TLSv1.3")
    return _TLS_VERSIONS[text.lower()]


def parse_bool_or_inherit(value: Any) -> bool | None:
    """true/false, or "" for the default of the section it refines."""
    return None if isinstance(value, str) and not value.strip() else parse_bool(value)


# The values that reach haproxy.cfg are checked by the one allowlist of their kind (rules.py).
parse_safe_name = rules.name
parse_health_path = rules.health_path
parse_header_value = rules.header_value
parse_host = rules.route_host
parse_route_path = rules.route_path


def parse_filter_expression(value: Any) -> str:
    """A Consul ``filter`` expression; Consul itself checks it on each read (a bad one is a 500 there)."""
    text = parse_string(value)
    if len(text) > 2000 or any(ch in text for ch in "\n\r\0"):
        raise ValueError("must be one line of at most 2000 characters")
    return text
