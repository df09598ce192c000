"""The one report writer: a benchmark's JSON document, its markdown and its PNG, each written atomically.

Each file goes to a ``.tmp`` beside it first (git-ignored in bench/results) and is renamed over the
old one, so a reader never sees half a file and an interrupted run leaves the last good one. What a
report says is each benchmark's own; what every report records about the code and the machine it
measured (:func:`code_identity`, :func:`environment`) is here too, so two results compare fairly.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from haproxy_sync import haproxy

from . import REPO

#: Draws the PNG into the path it is given; returns "" (or None) when it did, or why it could not.
Draw = Callable[[Path], str | None]


def atomic_write(path: Path, text: str) -> None:
    """``text`` into ``path`` via ``<path>.tmp`` and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_outputs(stem: Path, doc: Any, markdown: str | None = None, draw: Draw | None = None,
                  compact: bool = False) -> list[Path]:
    """``<stem>.json`` (indented, or ``compact``), ``<stem>.md`` when there is ``markdown`` and ``<stem>.png``
    when there is ``draw``; returns the paths written.

    ``draw`` is handed a temporary path (pass ``format="png"`` to matplotlib); when it returns a reason
    instead, that is printed and a PNG of an earlier run is removed, since it would not match the rest.
    """
    paths = [stem.with_name(stem.name + ".json")]
    atomic_write(paths[0], (json.dumps(doc, separators=(",", ":")) if compact else json.dumps(doc, indent=1)) + "\n")
    if markdown is not None:
        paths.append(stem.with_name(stem.name + ".md"))
        atomic_write(paths[-1], markdown)
    if draw is not None:
        png = stem.with_name(stem.name + ".png")
        tmp = png.with_name(png.name + ".tmp")
        reason = draw(tmp)
        if reason:
            print(f"no PNG: {reason}")
            tmp.unlink(missing_ok=True)
            png.unlink(missing_ok=True)
        else:
            tmp.replace(png)
            paths.append(png)
    return paths


def shown(paths: list[Path]) -> str:
    """The paths written, relative to the repository where they are inside it."""
    return ", ".join(str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p) for p in paths)


def git(*args: str) -> str:
    """``git <args>`` in the repository, its output stripped; "" when git does not answer."""
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def code_identity() -> dict[str, str]:
    """Which haproxy-sync was measured: the commit, whether the package differed from it, a content hash.

    Results only mean something next to the code they measured, and that code may be uncommitted.
    """
    package = REPO / "haproxy_sync"
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes_in_haproxy_sync": "yes" if git("status", "--porcelain", "--", "haproxy_sync") else "no",
        "sha256_of_haproxy_sync": digest.hexdigest()[:16],
    }


def first_line(argv: list[str], default: str = "unknown") -> str:
    """The first line a command prints (stdout, else stderr), e.g. a ``-v`` version line."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return default
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else default


def haproxy_version(binary: str | None = None) -> str:
    """``haproxy -v``'s first line for ``binary`` (default: the ``haproxy`` the stack finds)."""
    return first_line([binary or haproxy.find_binary("haproxy") or "haproxy", "-v"])


def environment() -> dict[str, Any]:
    """The machine and the code: CPUs, Python, HAProxy's version, the load average now, the code measured."""
    return {
        "cpus": os.cpu_count(), "python": platform.python_version(), "haproxy": haproxy_version(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "haproxy_sync_code": code_identity(),
    }
