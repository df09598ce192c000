"""The allowlists: one definition for each kind of value that can reach HAProxy.

Everything registered in Consul (names, IDs, addresses, ports, weights, tags, meta) is written by
whoever can register a service, so it is hostile until it has passed one of the checks below. Render,
the map writer and the Runtime API command builder (:mod:`haproxy_sync.commands`) all take their
values from here; nothing else decides what is safe.

Each check is an allowlist first: a value is compared, character by character, with the characters
its kind may hold (ASCII only, never a separator HAProxy or its CLI cares about: no space, newline,
``;``, ``#``, quote, backslash or ``%``). Only a value that passed may be handed to a Python parser
(``ipaddress``) to be put in canonical form: parsers accept more than they say (an IPv6 zone id takes
almost any text after ``%``), allowlists do not.

A value that passed comes back as a :class:`Checked` string of its kind, so code further down (the
template's output filter, the command builder) can tell a checked value from a plain string by its
type. A value that did not pass raises :class:`Refused`, which names the kind and why.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar


class Kind(enum.Enum):
    """The kinds of values that reach HAProxy; the value is how an error names it."""

    IPV4 = "IPv4 address"
    IPV6 = "IPv6 address"
    HOST_NAME = "host name"
    PORT = "port"
    WEIGHT = "weight"
    NAME = "backend or service name"
    SERVER = "server name"
    ROUTE_HOST = "route host"
    ROUTE_PATH = "route path"
    MAP_KEY = "map key"
    BALANCE = "balance algorithm"
    HEALTH_PATH = "health check path"
    LABEL = "label"
    CONFIG_TEXT = "value printed by the template"
    FILE_PATH = "file path"
    HOST_PATTERN = "host pattern"
    NETWORK = "network"
    GUID = "HAProxy guid"
    HEADER_NAME = "HTTP header name"
    HEADER_VALUE = "HTTP header value"


class Refused(ValueError):
    """A value that is not of its kind; the message names the kind, the value (cut short) and why."""

    def __init__(self, kind: Kind, value: object, why: str) -> None:
        shown = value[:80] if isinstance(value, str) else value
        super().__init__(f"{kind.value} {shown!r} refused: {why}")
        self.kind = kind
        self.why = why


class Checked(str):
    """A string that passed the allowlist of :attr:`kind`; made only by the functions of this module.

    One subclass per kind (see :data:`CHECKED`) rather than a ``kind`` attribute: a ``str`` subclass
    with instance attributes carries a ``__dict__``, and a catalog holds hundreds of thousands of these.
    """

    __slots__ = ()
    kind: ClassVar[Kind]


CHECKED: dict[Kind, type[Checked]] = {
    kind: type(f"Checked{kind.name.title().replace('_', '')}", (Checked,), {"__slots__": (), "kind": kind})
    for kind in Kind
}


def _checked(kind: Kind, text: str) -> Checked:
    return CHECKED[kind](text)


# --- the character classes (ASCII only: re.ASCII keeps \d and friends from matching other scripts) ---

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}", re.ASCII)
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)
# Not "." or "..": a name is also a path segment of Consul's URLs (/v1/health/service/<name>).
_NAME = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9_.:-]{1,100}", re.ASCII)
_SERVER = re.compile(r"slot[1-9][0-9]{0,5}", re.ASCII)
#: A route's path prefix: whole segments, at most :data:`MAX_PATH_SEGMENTS` (the template looks up that many).
MAX_PATH_SEGMENTS = 3
# A segment of only dots would let a route claim "/.." and is never a real prefix.
_SEGMENT = r"/(?!\.\.?(?:/|\Z))[A-Za-z0-9._~-]{1,64}"
_ROUTE_PATH = re.compile(rf"(?:{_SEGMENT}){{1,{MAX_PATH_SEGMENTS}}}/?", re.ASCII)
# A URL path and query for HAProxy's own check: no space, quote, backslash, '#', '$', ';' or parenthesis.
_HEALTH_PATH = re.compile(r"/[A-Za-z0-9._~/%?&=+,:@-]{0,199}", re.ASCII)
_NETWORK = re.compile(r"[0-9A-Fa-f:.]{2,45}/[0-9]{1,3}", re.ASCII)
_FILE_PATH = re.compile(r"(?!.*/\.\.(?:/|\Z))/[A-Za-z0-9._/+-]{0,1023}", re.ASCII)
_GUID = re.compile(r"[A-Za-z0-9_.:-]{1,127}", re.ASCII)  # HAProxy's own rule for guid values
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}", re.ASCII)
_HEADER_VALUE = re.compile(r"[A-Za-z0-9._~-]{1,64}", re.ASCII)
_HOST_KEY = r"(?:\*|[a-z0-9.-]{1,253})"
_MAP_KEY = re.compile(rf"(?=.{{1,500}}\Z){_HOST_KEY}(?:{_SEGMENT}){{0,{MAX_PATH_SEGMENTS}}}", re.ASCII)
BALANCE_ALGORITHMS = ("roundrobin", "static-rr", "leastconn", "first", "source", "random", "uri")
MAX_WEIGHT = 256  # HAProxy's own bound for server weights.
#: The backend of a backend's canaries (the canary header's target) is its name plus this suffix, a
#: name no service may take for itself.
CANARY_BACKEND_SUFFIX = ":canary"
MAX_ID_LENGTH = 256


def _string(kind: Kind, value: object) -> str:
    if not isinstance(value, str):
        raise Refused(kind, value, f"is a {type(value).__name__}, not a string")
    if not value:
        raise Refused(kind, value, "is empty")
    return value


def _matching(kind: Kind, pattern: re.Pattern[str], why: str, doc: str) -> Callable[[object], Checked]:
    """The check of a kind that is exactly one pattern: a string that fullmatches it, or Refused."""

    def check(value: object) -> Checked:
        text = _string(kind, value)
        if not pattern.fullmatch(text):
            raise Refused(kind, text, why)
        return _checked(kind, text)

    check.__doc__ = doc
    return check


# --- addresses ---


ipv4 = _matching(Kind.IPV4, _IPV4, "is not a dotted quad of 0-255",
                 "A dotted quad in canonical form (no leading zeros, each octet 0-255).")


def ipv6(value: object) -> Checked:
    """An IPv6 address without a zone id, in ``ipaddress``'s compressed lowercase form.

    Zone ids (``fe80::1%eth0``) are refused: HAProxy cannot reach a scoped address, so such a server
    would never take traffic, and the text after ``%`` is whatever the registrant wrote.
    """
    text = _string(Kind.IPV6, value)
    if "%" in text:
        raise Refused(Kind.IPV6, text, "has a zone id (%...), which HAProxy cannot use")
    if not _IPV6_CHARS.fullmatch(text):
        raise Refused(Kind.IPV6, text, "holds characters other than 0-9 a-f : .")
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError as exc:
        raise Refused(Kind.IPV6, text, str(exc)) from None
    return _checked(Kind.IPV6, str(address))


def host_name(value: object) -> Checked:
    """An RFC 1123 host name, lowercased: what a resolver will look up, and nothing else."""
    text = _string(Kind.HOST_NAME, value)
    if len(text) > 253:
        raise Refused(Kind.HOST_NAME, text, "is longer than 253 characters")
    labels = text.removesuffix(".").split(".")
    if not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise Refused(Kind.HOST_NAME, text,
                      "is not a valid host name (dot-separated labels of A-Z a-z 0-9 -, 1-63 each)")
    # An all-numeric last label is a mistyped IP address (256.1.1.1), never a name (RFC 3696, 2).
    if labels[-1].isdigit():
        raise Refused(Kind.HOST_NAME, text, "ends in a numeric label: not an IP address and not a name")
    return _checked(Kind.HOST_NAME, text.lower())


def address(value: object) -> Checked:
    """A server address as HAProxy should see it: an IPv4 or IPv6 address, or a host name.

    Raises :class:`Refused` (a ``ValueError``) naming why it is none of them.
    """
    if not isinstance(value, str) or not value:
        raise Refused(Kind.HOST_NAME, value, "address is empty")
    if _IPV4.fullmatch(value):  # the common case, already in the form HAProxy gets
        return _checked(Kind.IPV4, value)
    if "%" in value or (":" in value and _IPV6_CHARS.fullmatch(value)):
        return ipv6(value)  # refuses a zone id by name: the reason an operator needs
    try:
        return host_name(value)
    except Refused:
        raise Refused(Kind.HOST_NAME, value, "is neither an IP address nor a valid host name") from None


def is_ip(text: str) -> bool:
    """Whether ``text`` is an address the Runtime API can take (``set server ... addr``)."""
    return isinstance(text, CHECKED[Kind.IPV4] | CHECKED[Kind.IPV6]) or bool(
        _IPV4.fullmatch(text) or (_IPV6_CHARS.fullmatch(text) and _parses_as_ipv6(text)))


def _parses_as_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


# --- where a registrant may send the edge's traffic ---

#: Addresses that are never a backend of a public edge unless a network in ``sync.networks`` names them:
#: the edge itself (unspecified, loopback: HAProxy connects "0.0.0.0" to the client's destination, the
#: edge), link-local (cloud metadata at 169.254.169.254), multicast, broadcast and reserved space.
SPECIAL_NETWORKS: tuple[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network], ...] = tuple(
    (what, ipaddress.ip_network(net)) for what, net in (
        ("unspecified", "0.0.0.0/8"), ("loopback", "127.0.0.0/8"), ("link-local", "169.254.0.0/16"),
        ("multicast", "224.0.0.0/4"), ("reserved or broadcast", "240.0.0.0/4"),
        ("shared (carrier-grade NAT; cloud metadata)", "100.64.0.0/10"),
        ("unspecified", "::/128"), ("loopback", "::1/128"), ("link-local", "fe80::/10"), ("multicast", "ff00::/8"),
        ("IPv4-compatible", "::/96"), ("NAT64", "64:ff9b::/96"), ("NAT64", "64:ff9b:1::/48"), ("6to4", "2002::/16"),
        ("site-local", "fec0::/10"), ("cloud metadata", "fd00:ec2::254/128"),
    )
)


@dataclass(frozen=True)
class AddressPolicy:
    """Which checked addresses an instance may have: the operator's networks, and whether host names count.

    Host names are off by default: HAProxy resolves them through blocking libc at every check and reload,
    so one name whose DNS never answers stalls every apply of every service.
    """

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    host_names: bool = False
    #: The edge's own addresses and the ports its frontends bind: never a backend (a loop to itself).
    local: frozenset[str] = frozenset()
    own_ports: frozenset[int] = frozenset()

    def check_endpoint(self, address: Checked, port: int) -> Checked:
        """:meth:`check`, and never the edge's own frontends (its address and a port HAProxy binds)."""
        if port in self.own_ports and (address in self.local or address.kind is Kind.HOST_NAME):
            raise Refused(address.kind, f"{address}:{port}", "is one of the edge's own frontends")
        return self.check(address)

    def check(self, address: Checked) -> Checked:
        """``address`` when the policy allows it, else :class:`Refused` saying which rule and setting."""
        if address.kind is Kind.HOST_NAME:
            if not self.host_names:
                raise Refused(Kind.HOST_NAME, address, "is a host name; HAProxy resolves names blocking at every "
                                                       "check and reload (set sync.host_names = true to allow them)")
            return address
        ip = ipaddress.ip_address(address)  # checked text: the allowlist has passed
        targets = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            targets.append(ip.ipv4_mapped)  # HAProxy connects to the embedded IPv4 address
        listed = [net for net in self.networks for t in targets if t.version == net.version and t in net]
        if self.networks and not listed:
            raise Refused(address.kind, address, "is in none of sync.networks")
        for what, special in SPECIAL_NETWORKS:
            hit = any(t.version == special.version and t in special for t in targets)
            # Only a listed network inside the special range lets it through (127.0.0.0/8 for loopback);
            # a broad one (0.0.0.0/1) that merely contains it does not.
            if hit and not any(net.version == special.version and net.subnet_of(special) for net in listed):
                article = "an" if what[0] in "aeiou" else "a"
                raise Refused(address.kind, address, f"is {article} {what} address, never a backend of the edge unless "
                                                     "a network in sync.networks names it")
        return address


#: The policy of a caller that names none: every special address refused, host names off.
STRICT = AddressPolicy()


def network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR network for ``sync.networks`` (``10.0.0.0/8``, ``fd00::/8``)."""
    text = _string(Kind.NETWORK, value)
    if not _NETWORK.fullmatch(text):
        raise Refused(Kind.NETWORK, text, "is not a CIDR network such as 10.0.0.0/8 or fd00::/8")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise Refused(Kind.NETWORK, text, str(exc)) from None


# --- numbers ---


def port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise Refused(Kind.PORT, str(value)[:20], "is not an integer in 1-65535")
    return value


def weight(value: object, which: str = "weight") -> int:
    """A non-negative integer, capped at HAProxy's 256."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Refused(Kind.WEIGHT, str(value)[:20], f"{which} is not a non-negative integer")
    return min(value, MAX_WEIGHT)


# --- names ---


name = _matching(Kind.NAME, _NAME, "is not 1-100 characters of A-Z a-z 0-9 _ . : -",
                 "A backend or service name: what HAProxy accepts in proxy names, at most 100 characters.")


def is_guid(text: object) -> bool:
    return isinstance(text, str) and bool(_GUID.fullmatch(text))


def is_name(text: object) -> bool:
    return isinstance(text, str) and bool(_NAME.fullmatch(text))


guid = _matching(Kind.GUID, _GUID, "is not 1-127 characters of A-Z a-z 0-9 _ . : -",
                 "A guid for ``add server`` (HAProxy 3.0 keeps a server's counters across reloads by it).")
server = _matching(Kind.SERVER, _SERVER, "is not slotN",
                   "A server slot's name as haproxy-sync renders it: ``slot1`` .. ``slot999999``.")
label_text = _matching(Kind.LABEL, _NAME, "is not 1-100 characters of A-Z a-z 0-9 _ . : -",
                       "A label that is already safe (what :func:`label` makes of an instance ID).")


def label(instance_id: str, node: str = "") -> Checked:
    """A name for an instance that is safe anywhere in a config line, stable for the instance's life.

    The Consul service ID is used as it is when it is already a safe name (what operators will grep
    for); otherwise a readable cleaned form plus a short hash of the original keeps it unique.
    """
    if _NAME.fullmatch(instance_id):
        return _checked(Kind.LABEL, instance_id)
    cleaned = re.sub(r"[^A-Za-z0-9_.:-]+", "_", instance_id, flags=re.ASCII)[:60].strip("_") or "instance"
    digest = hashlib.sha256(f"{node}\0{instance_id}".encode(errors="surrogatepass")).hexdigest()[:8]
    return _checked(Kind.LABEL, f"{cleaned}-{digest}")


# --- routes ---


def route_host(value: object) -> Checked | str:
    """A Host header to route on: a host name, lowercased, without a trailing dot; "" for none."""
    if value == "":
        return ""
    try:
        host = host_name(value)
    except Refused as exc:
        raise Refused(Kind.ROUTE_HOST, value, exc.why) from None
    return _checked(Kind.ROUTE_HOST, host.rstrip("."))


def route_path(value: object) -> Checked | str:
    """A path prefix of whole segments (``/api`` routes ``/api`` and ``/api/...``, not ``/apix``).

    Returned without a trailing slash; "" and "/" mean "any path".
    """
    if value in ("", "/"):
        return ""
    text = _string(Kind.ROUTE_PATH, value)
    if len(text) > 200 or not _ROUTE_PATH.fullmatch(text):
        raise Refused(Kind.ROUTE_PATH, text, f"is not 1-{MAX_PATH_SEGMENTS} segments of A-Z a-z 0-9 . _ ~ - "
                                              "(e.g. \"/api\" or \"/api/v2\")")
    return _checked(Kind.ROUTE_PATH, text.rstrip("/"))


map_key = _matching(Kind.MAP_KEY, _MAP_KEY, "is not a lowercase host or * followed by up to 3 /segments",
                    "A key of the routes map: ``host``, ``host/seg``, ``*/seg`` (what the frontend looks up).")


def host_pattern(value: object) -> Checked:
    """``*`` (any host, and routes on a path of any host), ``*.suffix`` (hosts under it), or one host name."""
    text = _string(Kind.HOST_PATTERN, value)
    try:
        if text == "*.":
            raise Refused(Kind.HOST_PATTERN, text, "names no host")
        if text == "*":
            return _checked(Kind.HOST_PATTERN, text)
        host = route_host(text.removeprefix("*."))
    except Refused as exc:
        raise Refused(Kind.HOST_PATTERN, text, exc.why) from None
    return _checked(Kind.HOST_PATTERN, f"*.{host}" if text.startswith("*.") else host)


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether a route on ``host`` ("" for a path on any host) is one ``patterns`` let a registrant claim."""
    if "*" in patterns:
        return True
    return bool(host) and any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in patterns)


# --- backend options ---


def balance(value: object) -> Checked:
    text = _string(Kind.BALANCE, value).lower()
    if text not in BALANCE_ALGORITHMS:
        raise Refused(Kind.BALANCE, value, f"is not one of {', '.join(BALANCE_ALGORITHMS)}")
    return _checked(Kind.BALANCE, text)


health_path = _matching(
    Kind.HEALTH_PATH, _HEALTH_PATH,
    "is not a URL path starting with / of A-Z a-z 0-9 . _ ~ / % ? & = + , : @ - (at most 200 characters)",
    "The path (and query) of HAProxy's own HTTP check.")
file_path = _matching(
    Kind.FILE_PATH, _FILE_PATH, "is not an absolute path of A-Z a-z 0-9 . _ / + - (no spaces, no ..)",
    "An absolute path HAProxy is told about in a command (the routes map): no space or separator.")


header_name = _matching(Kind.HEADER_NAME, _HEADER_NAME, "is not 1-64 letters, digits and '-'",
                        "An HTTP header name a frontend rule matches on (``X-Canary``).")
header_value = _matching(Kind.HEADER_VALUE, _HEADER_VALUE, "is not 1-64 letters, digits and '.', '_', '~', '-'",
                         "The exact header value a frontend rule matches (``always``).")


# --- the last line of defence for haproxy.cfg ---

_CONFIG_TEXT = re.compile(r"[\x20-\x7e]*", re.ASCII)


def config_text(value: object) -> str:
    """What a template may print: a checked value, a number, or one line of printable ASCII.

    Values from Consul reach the template only as :class:`Checked` strings; anything else printed
    comes from the settings or the template itself. This filter makes it impossible for any printed
    value to start a line of its own, whatever a custom template does.
    """
    if isinstance(value, Checked):
        return value
    if isinstance(value, bool):
        raise Refused(Kind.CONFIG_TEXT, value, "a template printed a boolean; print a string or use `if`")
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        if not _CONFIG_TEXT.fullmatch(value):
            raise Refused(Kind.CONFIG_TEXT, value, "holds a line break, a control or a non-ASCII character")
        return value
    raise Refused(Kind.CONFIG_TEXT, repr(value)[:80], f"a template printed a {type(value).__name__}; print its fields")


#: One refused example per kind, for the docs and a test that each is refused.
REFUSED_EXAMPLES: dict[Kind, tuple[object, ...]] = {
    Kind.IPV4: ("10.0.0.01",),
    Kind.IPV6: ("::1%eth0;shutdown frontend http",),
    Kind.HOST_NAME: ("app.internal\nserver x 1.2.3.4:80",),
    Kind.PORT: (0,),
    Kind.WEIGHT: (-1,),
    Kind.NAME: ("web;disable server",),
    Kind.SERVER: ("slot1 weight 0",),
    Kind.ROUTE_HOST: ("evil.example.com backend",),
    Kind.ROUTE_PATH: ("/api/../admin",),
    Kind.MAP_KEY: ("cabify.example.com other",),
    Kind.BALANCE: ("roundrobin\n  server x",),
    Kind.HEALTH_PATH: ("/health HTTP/1.1\\r\\nHost: x",),
    Kind.LABEL: ("cabify 1",),
    Kind.CONFIG_TEXT: ("a\nb",),
    Kind.FILE_PATH: ("/etc/haproxy/routes map",),
    Kind.HOST_PATTERN: ("*example.com",),
    Kind.NETWORK: ("10.0.0.0/8;",),
    Kind.GUID: ("srv:web:slot1 weight 100",),
    Kind.HEADER_NAME: ("X-Canary) } || { always_true",),
    Kind.HEADER_VALUE: ("always }",),
}

#: The check of each kind, for the same test and the docs.
CHECKS = {
    Kind.IPV4: ipv4, Kind.IPV6: ipv6, Kind.HOST_NAME: host_name, Kind.PORT: port, Kind.WEIGHT: weight,
    Kind.NAME: name, Kind.SERVER: server, Kind.ROUTE_HOST: route_host, Kind.ROUTE_PATH: route_path,
    Kind.MAP_KEY: map_key, Kind.BALANCE: balance, Kind.HEALTH_PATH: health_path, Kind.LABEL: label_text,
    Kind.CONFIG_TEXT: config_text, Kind.HOST_PATTERN: host_pattern, Kind.NETWORK: network,
    Kind.FILE_PATH: file_path, Kind.GUID: guid, Kind.HEADER_NAME: header_name, Kind.HEADER_VALUE: header_value,
}
