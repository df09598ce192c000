"""``python -m bench.scale.probe --config FILE``: time haproxy-sync's one-shot render, phase by phase.

Runs ``haproxy-sync render --dry-run --check --config FILE`` in this process ``--repeat`` times, with
timers wrapped around the functions that command calls, and prints one JSON object on stdout:

* ``total``: the whole command (settings, every Consul read, plan, render, ``haproxy -c``), without
  the interpreter's start and imports (``import_seconds`` has those, once);
* ``plan``: ``haproxy_sync.pipeline.lay_out`` (slot tables from the snapshot and the live config);
* ``render``: ``haproxy_sync.render.render`` as the pipeline calls it (Jinja2, the text of haproxy.cfg);
* ``validate``: ``haproxy_sync.haproxy.validate`` (``haproxy -c`` on the rendered text);
* ``read``: the rest of ``total`` (settings, discovery and health reads, parsing them).

Why through the CLI and wrappers rather than calling the functions directly: the command is the
supported way to render once, and it follows whatever the discovery code does to find the services;
the wrappers only look at the time spent in the named functions. A name that no longer exists, or
that the command no longer calls, is reported as ``null`` rather than guessed at.

The first repetition pays for compiling the template and warming caches; the benchmark reports the
median of the others (and the first apart).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import json
import sys
import time
from collections.abc import Callable
from typing import Any

WRAPPED = {
    "plan": ("haproxy_sync.pipeline", "lay_out"),
    "render": ("haproxy_sync.pipeline", "render"),
    "validate": ("haproxy_sync.haproxy", "validate"),
}


def _wrap(spent: dict[str, float], calls: dict[str, int]) -> None:
    """Replace each function in ``WRAPPED`` by a timer around it (looked up at call time by the CLI)."""
    for phase, (module_name, attribute) in WRAPPED.items():
        module = importlib.import_module(module_name)
        original = getattr(module, attribute, None)
        if original is None:
            continue

        def timed(*args: Any, __original: Callable[..., Any] = original, __phase: str = phase,
                  **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return __original(*args, **kwargs)
            finally:
                spent[__phase] += time.perf_counter() - started
                calls[__phase] += 1

        setattr(module, attribute, functools.wraps(original)(timed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="haproxy-sync config.toml")
    parser.add_argument("--repeat", type=int, default=4, help="renders, the first one cold [4]")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    from haproxy_sync import cli

    imported = time.perf_counter() - started
    runs: list[dict[str, Any]] = []
    for _ in range(max(1, args.repeat)):
        spent = dict.fromkeys(WRAPPED, 0.0)
        calls = dict.fromkeys(WRAPPED, 0)
        _wrap(spent, calls)
        out, err = io.StringIO(), io.StringIO()
        begin = time.perf_counter()
        code: Any = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(["render", "--dry-run", "--check", "--config", args.config], standalone_mode=False)
            except SystemExit as exc:
                code = exc.code
        total = time.perf_counter() - begin
        _unwrap()
        run: dict[str, Any] = {
            "exit_code": code,
            "total": round(total, 4),
            "config_bytes": len(out.getvalue()),
            "backends": sum(1 for line in out.getvalue().splitlines() if line.startswith("backend ")),
        }
        for phase in WRAPPED:
            run[phase] = round(spent[phase], 4) if calls[phase] else None
        known = sum(spent[phase] for phase in WRAPPED if calls[phase])
        run["read"] = round(total - known, 4)
        if code not in (0, None):
            run["stderr"] = err.getvalue()[-800:]
        runs.append(run)
    print(json.dumps({"import_seconds": round(imported, 4), "runs": runs}))
    return 0


def _unwrap() -> None:
    """Put the originals back, so that the next repetition wraps the real functions again."""
    for module_name, attribute in WRAPPED.values():
        module = importlib.import_module(module_name)
        current = getattr(module, attribute, None)
        original = getattr(current, "__wrapped__", None)
        if original is not None:
            setattr(module, attribute, original)


if __name__ == "__main__":
    sys.exit(main())
