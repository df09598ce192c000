"""The one builder of Runtime API commands: typed arguments in, one checked command out.

HAProxy's CLI splits what it reads on ``;`` and on newlines, so an argument that could hold either
is a second command. Every command haproxy-sync sends on the admin or the master socket is made here,
from arguments that each pass their allowlist in :mod:`haproxy_sync.rules`, and the finished text is
matched once more against the grammar of the commands haproxy-sync means to send. A
:class:`Command` that exists is one command; :func:`haproxy_sync.haproxy.runtime_commands` takes
nothing else.
"""

from __future__ import annotations

import enum
import re

from haproxy_sync import rules


class UnsafeCommand(ValueError):
    """A command that would not be exactly one command of the grammar; it is never sent."""


class ServerState(enum.Enum):
    """The administrative states haproxy-sync sets (``set server ... state``)."""

    READY = "ready"
    DRAIN = "drain"
    MAINT = "maint"


_TOKEN = r"[A-Za-z0-9_.:/*+~-]+"
_FILE = r"/[A-Za-z0-9._/+-]{0,1023}"  # rules.file_path
#: Every command haproxy-sync sends, as a pattern over its whole text.
GRAMMAR = re.compile(
    r"set server [A-Za-z0-9_.:-]{1,100}/slot[1-9][0-9]{0,5} "
    r"(?:addr [0-9A-Fa-f:.]{2,45} port [1-9][0-9]{0,4}|weight [0-9]{1,3}|state (?:ready|drain|maint))"
    rf"|(?:add|set) map /{_TOKEN} {_TOKEN} [A-Za-z0-9_.:-]{{1,100}}"
    rf"|del map /{_TOKEN} {_TOKEN}"
    rf"|show map /{_TOKEN}"
    r"|show servers (?:state|conn)(?: [A-Za-z0-9_.:-]{1,100})?"
    r"|show stat [A-Za-z0-9_.:-]{1,100} 4 -1"
    r"|add server [A-Za-z0-9_.:-]{1,100}/slot[1-9][0-9]{0,5} "
    r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|\[[0-9A-Fa-f:.]{2,45}\]):[1-9][0-9]{0,4}"
    r"(?: [a-z]{1,12}(?: [0-9]{1,9}(?:ms|s|m|h|d|us)?)?)*(?: guid [A-Za-z0-9_.:-]{1,127})? weight [0-9]{1,3} disabled"
    r"|enable health [A-Za-z0-9_.:-]{1,100}/slot[1-9][0-9]{0,5}"
    r"|show proc|reload|wait -h|dump stats-file"
    rf"|(?:new|commit|abort|del|show) ssl cert {_FILE}|show ssl cert"
    rf"|set ssl cert {_FILE} <<"
    rf"|(?:add|del) ssl crt-list {_FILE} {_FILE}",
    re.ASCII,
)
#: What may follow ``set ssl cert ... <<``: PEM lines only (what cryptography writes), no empty line,
#: which would end the payload early, and nothing HAProxy's CLI would read as a command.
_PAYLOAD = re.compile(r"(?:-----(?:BEGIN|END) [A-Z ]{1,30}-----\n|[A-Za-z0-9+/=]{1,76}\n){3,4000}", re.ASCII)


class Command(str):
    """One Runtime API command that matches :data:`GRAMMAR`; the only thing the socket sender takes."""

    __slots__ = ()

    def __new__(cls, text: str) -> Command:
        if not isinstance(text, str) or not GRAMMAR.fullmatch(text):
            raise UnsafeCommand(f"refused to build Runtime API command {str(text)[:120]!r}: not one command of the "
                                "grammar haproxy-sync sends")
        return super().__new__(cls, text)

    @property
    def verb(self) -> str:
        """``set server``, ``add map``, ``show proc``...: the first two words."""
        return " ".join(self.split()[:2])

    @property
    def backend(self) -> str | None:
        """The backend a ``set server``, ``add server`` or ``enable health`` command changes."""
        changes_server = self.startswith(("set server ", "add server ", "enable health "))
        return self.split()[2].partition("/")[0] if changes_server else None

    @property
    def changes_map(self) -> bool:
        return self.startswith(("add map ", "set map ", "del map "))


def _target(backend: str, server: str) -> str:
    return f"{rules.name(backend)}/{rules.server(server)}"


def set_server_addr(backend: str, server: str, address: str, port: int) -> Command:
    """Point a slot at an instance; only IP addresses (a host name needs a reload to be resolved)."""
    if not rules.is_ip(address):
        raise UnsafeCommand(f"address {address[:80]!r} is not an IP address; the Runtime API takes only those")
    ip = rules.ipv6(address) if ":" in address else rules.ipv4(address)
    return Command(f"set server {_target(backend, server)} addr {ip} port {rules.port(port)}")


def set_server_weight(backend: str, server: str, weight: int) -> Command:
    return Command(f"set server {_target(backend, server)} weight {rules.weight(weight)}")


def set_server_state(backend: str, server: str, state: ServerState) -> Command:
    return Command(f"set server {_target(backend, server)} state {ServerState(state).value}")


_OPTION_WORD = re.compile(r"[a-z]{1,12}|[0-9]{1,9}(?:ms|s|m|h|d|us)?", re.ASCII)


def add_server(backend: str, server: str, address: str, port: int, options: tuple[str, ...], weight: int,
               guid: str = "") -> Command:
    """A dynamic server for a slot, in maintenance: ``options`` are server keywords and their numbers
    (see :mod:`haproxy_sync.dynamic`), each word checked here too; ``guid`` keeps its counters across
    reloads on HAProxy 3.0 (the same the rendered config gives the slot)."""
    if not rules.is_ip(address):
        raise UnsafeCommand(f"address {address[:80]!r} is not an IP address; the Runtime API takes only those")
    endpoint = f"[{rules.ipv6(address)}]" if ":" in address else rules.ipv4(address)
    for word in options:
        if not isinstance(word, str) or not _OPTION_WORD.fullmatch(word):
            raise UnsafeCommand(f"server option {str(word)[:40]!r} is not a keyword or a number")
    words = "".join(f" {word}" for word in options)
    if guid:
        words += f" guid {rules.guid(guid)}"
    return Command(f"add server {_target(backend, server)} {endpoint}:{rules.port(port)}{words} "
                   f"weight {rules.weight(weight)} disabled")


def enable_health(backend: str, server: str) -> Command:
    """Start the checks of a dynamic server (they start off, unlike a configured server's)."""
    return Command(f"enable health {_target(backend, server)}")


def add_map(map_path: str, key: str, backend: str) -> Command:
    return Command(f"add map {rules.file_path(map_path)} {rules.map_key(key)} {rules.name(backend)}")


def set_map(map_path: str, key: str, backend: str) -> Command:
    return Command(f"set map {rules.file_path(map_path)} {rules.map_key(key)} {rules.name(backend)}")


def del_map(map_path: str, key: str) -> Command:
    return Command(f"del map {rules.file_path(map_path)} {rules.map_key(key)}")


def show_map(map_path: str) -> Command:
    return Command(f"show map {rules.file_path(map_path)}")


def show_servers_state(backend: str | None = None) -> Command:
    return Command(f"show servers state {rules.name(backend)}" if backend else "show servers state")


def show_servers_conn(backend: str) -> Command:
    """Connections in use and idle per server of one backend (``used_cur`` is what a drain waits on)."""
    return Command(f"show servers conn {rules.name(backend)}")


def show_stat_servers(backend: str) -> Command:
    """The stats CSV of one backend's servers only (type 4), for their sessions and queue."""
    return Command(f"show stat {rules.name(backend)} 4 -1")


class Payload(str):
    """The PEM text sent after ``set ssl cert ... <<``: matched against the PEM line grammar."""

    __slots__ = ()

    def __new__(cls, text: str) -> Payload:
        if not isinstance(text, str) or not _PAYLOAD.fullmatch(text):
            raise UnsafeCommand("refused to send a certificate payload that is not PEM lines only")
        return super().__new__(cls, text)


def new_ssl_cert(path: str) -> Command:
    return Command(f"new ssl cert {rules.file_path(path)}")


def set_ssl_cert(path: str, pem: str) -> tuple[Command, Payload]:
    """A transaction that replaces ``path``'s certificate with ``pem`` (committed by :func:`commit_ssl_cert`)."""
    return Command(f"set ssl cert {rules.file_path(path)} <<"), Payload(pem if pem.endswith("\n") else pem + "\n")


def commit_ssl_cert(path: str) -> Command:
    return Command(f"commit ssl cert {rules.file_path(path)}")


def abort_ssl_cert(path: str) -> Command:
    return Command(f"abort ssl cert {rules.file_path(path)}")


def del_ssl_cert(path: str) -> Command:
    return Command(f"del ssl cert {rules.file_path(path)}")


def show_ssl_cert(path: str) -> Command:
    return Command(f"show ssl cert {rules.file_path(path)}")


def add_ssl_crt_list(crt_list: str, path: str) -> Command:
    return Command(f"add ssl crt-list {rules.file_path(crt_list)} {rules.file_path(path)}")


def del_ssl_crt_list(crt_list: str, path: str) -> Command:
    return Command(f"del ssl crt-list {rules.file_path(crt_list)} {rules.file_path(path)}")


SHOW_PROC = Command("show proc")
#: The certificates HAProxy holds, one path per line (with a ``*`` before those in a transaction).
SHOW_SSL_CERTS = Command("show ssl cert")
#: The counters of every object with a ``guid``, in the format ``stats-file`` loads (HAProxy 3.0).
DUMP_STATS_FILE = Command("dump stats-file")
#: ``wait``'s usage: lists ``srv-removable`` on an HAProxy that defines when a server has no
#: connections left (3.0); "Unknown command" on 2.6. A probe that changes nothing.
WAIT_USAGE = Command("wait -h")
RELOAD = Command("reload")
