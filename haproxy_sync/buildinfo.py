"""Where this copy of haproxy-sync comes from: the git revision, for ``build_info`` and ``--version``."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def revision() -> str:
    """The git revision of the checkout this package runs from (``abc1234``, ``-dirty`` when changed),
    else the one written beside the package at build time (``REVISION``), else ``unknown``."""
    written = _PACKAGE / "REVISION"
    try:
        text = written.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    if text and len(text) <= 64 and all(c.isalnum() or c in "-." for c in text):
        return text
    if (_PACKAGE.parent / ".git").exists():
        try:
            result = subprocess.run(["git", "-C", str(_PACKAGE.parent), "describe", "--always", "--dirty",
                                     "--abbrev=12", "--exclude", "*"], capture_output=True, text=True,
                                    timeout=5, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        found = result.stdout.strip()
        if result.returncode == 0 and found and len(found) <= 64:
            return found
    return "unknown"
