"""SIGHUP from the first instant of the process: remembered, never the default action (a kill).

A SIGHUP's default is to end the process, and the daemon's own handler exists only once its loop
runs, most of a second after exec (the imports). The entry module installs :func:`remember` before
anything else; the daemon takes what came meanwhile (:func:`take`) and re-reads once; any other
command gives SIGHUP its default back (:func:`release`), re-raising one that came.
"""

from __future__ import annotations

import os
import signal
import threading

_arrived = threading.Event()  # set from the signal handler: an Event is safe to set there


def _remember(signum: int, frame: object) -> None:
    _arrived.set()


def install() -> None:
    signal.signal(signal.SIGHUP, _remember)


def take() -> bool:
    """Whether a SIGHUP came before the daemon's loop handled them; clears it."""
    arrived = _arrived.is_set()
    _arrived.clear()
    return arrived


def release() -> None:
    """SIGHUP's default again (a command that is not the daemon); one that came is delivered now."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    if take():
        os.kill(os.getpid(), signal.SIGHUP)
