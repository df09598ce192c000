"""The grammar of the Runtime API commands haproxy-sync means to send, written apart from the product.

The product builds its commands in ``haproxy_sync/commands.py``; this module checks what actually
went out on the sockets (recorded by ``sitecustomize.py`` beside it) against its own patterns, so a
mistake in the product's grammar is not also a mistake in the check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

_NAME = r"[A-Za-z0-9_.:-]{1,100}"
_PATH = r"/[A-Za-z0-9._/+-]{1,1023}"
_KEY = r"(?:\*|[a-z0-9.-]{1,253})(?:/[A-Za-z0-9._~-]{1,64}){0,3}"
_IP = r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9a-f:.]{2,45})"
COMMANDS = [
    re.compile(r"show proc"),
    re.compile(r"reload"),
    re.compile(rf"show servers (?:state|conn)(?: (?P<backend>{_NAME}))?"),
    re.compile(rf"show stat (?P<backend>{_NAME}) 4 -1"),
    re.compile(r"wait -h"),
    re.compile(r"dump stats-file"),
    re.compile(rf"show map (?P<path>{_PATH})"),
    re.compile(rf"(?:add|set) map (?P<path>{_PATH}) {_KEY} (?P<backend>{_NAME})"),
    re.compile(rf"del map (?P<path>{_PATH}) {_KEY}"),
    re.compile(rf"add server (?P<backend>{_NAME})/slot[1-9][0-9]* "
               r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|\[[0-9a-f:.]+\]):[1-9][0-9]{0,4}"
               r"(?: (?:check|inter|fastinter|downinter|fall|rise|maxconn|minconn|maxqueue|slowstart)"
               r"(?: [0-9]+(?:ms|s|m|h|d|us)?)?)*(?: guid srv:(?P<guid_backend>[A-Za-z0-9_.:-]+):slot[1-9][0-9]*)?"
               r" weight [0-9]{1,3} disabled"),
    re.compile(rf"enable health (?P<backend>{_NAME})/slot[1-9][0-9]*"),
    re.compile(rf"set server (?P<backend>{_NAME})/slot[1-9][0-9]*"
               rf" (?:addr {_IP} port [1-9][0-9]{{0,4}}|weight [0-9]{{1,3}}|state (?:ready|maint|drain))"),
    re.compile(r"show ssl cert"),
    re.compile(rf"(?:new|commit|abort|del|show) ssl cert (?P<path>{_PATH}\.pem)"),
    re.compile(rf"set ssl cert (?P<path>{_PATH}\.pem) <<"),
    re.compile(rf"(?:add|del) ssl crt-list (?P<path>{_PATH}) (?P<cert>{_PATH}\.pem)"),
]
#: The lines of a certificate payload (after ``set ssl cert ... <<``, up to the empty line that ends it).
PEM_LINE = re.compile(r"-----(?:BEGIN|END) (?:CERTIFICATE|PRIVATE KEY)-----|[A-Za-z0-9+/=]{1,76}")


def known_backends(root: Path, record: Path | None = None) -> set[str]:
    """Every backend named in any HAProxy config under the test's directory (live, last-good, candidates),
    and in every config written during the test (``<record>.backends``, see sitecustomize.py)."""
    names: set[str] = set()
    written = Path(f"{record}.backends") if record is not None else None
    if written is not None and written.exists():
        names.update(written.read_text().split())
    for path in root.rglob("*.cfg*"):
        if path.is_file():
            names.update(re.findall(r"^backend (\S+)", path.read_text(errors="replace"), re.MULTILINE))
    return names


def known_maps(record: Path) -> set[str]:
    """The map files named by the configs written during the test (``<record>.maps``)."""
    written = Path(f"{record}.maps")
    return set(written.read_text().split()) if written.exists() else set()


def problems(sent: bytes, backends: Iterable[str], root: Path, maps: Iterable[str] = ()) -> list[str]:
    """What in ``sent`` is not a line of one or more grammar commands for this test's own backends and files."""
    known = set(backends)
    known_map_paths = set(maps)
    # A certificate of the store is known by the crt-list beside it that a written config names.
    store_dirs = {Path(path).parent for path in known_map_paths if not path.endswith(".map")}
    found: list[str] = []
    if sent and not sent.endswith(b"\n"):
        found.append(f"the last write does not end a line: {sent[-80:]!r}")
    in_payload = False
    for raw in sent.split(b"\n")[:-1] if sent else []:
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            found.append(f"not ASCII: {raw[:120]!r}")
            continue
        if in_payload:
            if not line:
                in_payload = False
            elif not PEM_LINE.fullmatch(line):
                found.append(f"a certificate payload line that is not PEM: {line[:120]!r}")
            continue
        in_payload = line.startswith("set ssl cert ") and line.endswith(" <<")
        if any(ch in line for ch in "\r\0\t#\\\"'") or "  " in line:
            found.append(f"a separator HAProxy's CLI reads: {line[:120]!r}")
            continue
        for piece in line.split("; "):
            match = next((m for pattern in COMMANDS if (m := pattern.fullmatch(piece))), None)
            if match is None:
                found.append(f"not one command of the grammar: {piece[:120]!r} (line {line[:120]!r})")
                continue
            backend = match.groupdict().get("backend")
            if backend is not None and backend not in known:
                found.append(f"backend {backend!r} is in no config of this test: {piece[:120]!r}")
            for key in ("path", "cert"):
                path = match.groupdict().get(key)
                if path is None or Path(path).is_relative_to(root) or path in known_map_paths:
                    continue
                if not (path.endswith(".pem") and Path(path).parent in store_dirs):
                    found.append(f"file {path!r} is not this test's: {piece[:120]!r}")
    return found
