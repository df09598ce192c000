"""The ``haproxy-sync`` command. Thin: parse flags, build settings, call one function, map to an exit code.

Exit codes: 0 success; 1 an error (one line on stderr, a traceback only with ``--debug``); 2 with
``render --diff`` when the rendered config differs from the live file; 64 a usage error.
"""

from __future__ import annotations

# Before the imports (most of a second): a SIGHUP from now on is a re-read, never a kill.
from haproxy_sync import early_signals

early_signals.install()

import asyncio
import difflib
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from haproxy_sync import __version__, haproxy, logs
from haproxy_sync.config import LOG_FORMATS, LOG_LEVELS, ConfigError, Settings, load_settings
from haproxy_sync.consul import ConsulError
from haproxy_sync.daemon import DaemonError
from haproxy_sync.render import TemplateError
from haproxy_sync.values import parse_canary_share

if TYPE_CHECKING:
    from haproxy_sync.pipeline import OneRead

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_USAGE = 0, 1, 2, 64
EXIT_CODES_HELP = "Exit codes: 0 ok, 1 error, 2 changes found (render --diff), 64 usage error."
log = logging.getLogger("haproxy_sync")


class Failure(Exception):
    """An error already phrased for the operator: printed as one line, exit code 1."""


def _settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Flags shared by every command that needs settings; they override file and environment."""
    options = [
        click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
                     help="TOML config file [default: /etc/haproxy-sync/config.toml, if it exists]."),
        click.option("--consul", "consul_address", metavar="URL",
                     help="Consul address, e.g. http://127.0.0.1:8500 (overrides CONSUL_HTTP_ADDR)."),
        click.option("--service", "services", multiple=True, metavar="NAME",
                     help="Consul service to route; repeat for several. Replaces [[services]] of the file."),
        click.option("--template", type=click.Path(path_type=Path), default=None,
                     help="Jinja2 template for haproxy.cfg [default: the built-in one]."),
        click.option("--output", type=click.Path(path_type=Path), default=None,
                     help="Where haproxy.cfg is written (haproxy.config_path)."),
        click.option("--log-level", type=click.Choice(LOG_LEVELS), default=None, help="Log level [default: info]."),
        click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None,
                     help="Log lines as key=value text or JSON [default: text]."),
        click.option("--debug", is_flag=True, help="Debug logs, and a traceback on errors."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _load(params: dict[str, Any]) -> Settings:
    overrides: dict[str, Any] = {}
    for flag, key in (
        ("consul_address", "consul.address"),
        ("template", "haproxy.template"),
        ("output", "haproxy.config_path"),
        ("log_level", "log.level"),
        ("log_format", "log.format"),
    ):
        if params.get(flag) is not None:
            overrides[key] = str(params[flag])
    if params.get("debug"):
        overrides["log.level"] = "debug"
    return load_settings(params.get("config_path"), overrides=overrides, services=params.get("services") or ())


def _configure_logs(settings: Settings) -> None:
    """Logging as the settings ask, then the settings' own warnings as log lines."""
    logs.configure(settings.log.level, settings.log.format)
    for warning in settings.warnings:
        log.warning("config: %s", warning)


def _command(func: Callable[..., int]) -> Callable[..., None]:
    """Run a command body, turning known errors into one line on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(**params: Any) -> None:
        debug = bool(params.get("debug"))
        if func.__name__ != "run" or params.get("once"):
            early_signals.release()  # only the daemon takes SIGHUP as a re-read
        # Until the settings are loaded, the flags (or the defaults) say how a failure is written.
        logs.configure("debug" if debug else "info", params.get("log_format") or "text")
        try:
            code = func(**params)
        except ConfigError as exc:
            for problem in exc.problems:
                logs.fatal(f"config: {problem}", "config.invalid")
            code = EXIT_ERROR
        except (Failure, TemplateError, ConsulError, DaemonError, haproxy.HAProxyError) as exc:
            if debug:
                log.exception("failed")
            logs.fatal(str(exc), "fatal", error=type(exc).__name__)
            code = EXIT_ERROR
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # usage errors: click prints them and exits 64
        except Exception as exc:  # a bug: still one line (the traceback with --debug), never a raw dump
            if debug:
                log.exception("failed")
            logs.fatal(f"unexpected {type(exc).__name__} in `{func.__name__}`: {str(exc)[:500]}; this is a bug: "
                       "run again with --debug for the traceback and report it", "fatal", error=type(exc).__name__)
            code = EXIT_ERROR
        sys.exit(code)

    return wrapper


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--version``: the release and the revision (buildinfo's, as build_info shows it), since two
    hosts on "0.1.0" may run different code: the revision is what tells them apart."""
    if not value or ctx.resilient_parsing:
        return
    from haproxy_sync.buildinfo import revision

    click.echo(f"haproxy-sync {__version__} (revision {revision()})")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=EXIT_CODES_HELP)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and the git revision it was built from, then exit.")
def main() -> None:
    """Keep HAProxy in step with Consul: blocking queries, Jinja2, validated atomic swaps, clean reloads.

    Settings come from built-in defaults, then the TOML file, then Consul's environment variables
    (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, ...), then flags. Try `haproxy-sync dev` for a sandbox.
    """


@main.command(epilog=EXIT_CODES_HELP)
@_settings_options
@click.option("--once", is_flag=True, help="Read Consul once, apply once, exit (0 when applied).")
@_command
def run(once: bool, **params: Any) -> int:
    """Watch Consul and keep haproxy.cfg and HAProxy in step until stopped.

    SIGTERM or SIGINT stop it; SIGHUP re-reads the config file and the template (a bad new one is
    reported and the running one kept).
    """
    from haproxy_sync.daemon import Daemon
    from haproxy_sync.pipeline import run_once
    from haproxy_sync.wiring import run_process, stuck_threads

    settings = _load(params)
    _configure_logs(settings)
    if once:
        applied, sentence = asyncio.run(run_once(settings))
        log.log(logging.INFO if applied else logging.ERROR, "once: %s", sentence)
        return EXIT_OK if applied else EXIT_ERROR
    daemon = Daemon(settings, reload_settings=lambda: _load(params))
    code = run_process(daemon)
    if stuck_threads():  # a step cancelled by the stop: its thread holds nothing the next start needs
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


@main.command(epilog=EXIT_CODES_HELP)
@_settings_options
@click.option("--dry-run", is_flag=True, help="Print the rendered config to stdout; touch nothing.")
@click.option("--diff", "show_diff", is_flag=True,
              help="Print a unified diff against the live file; exit 2 when they differ. Touches nothing.")
@click.option("--check", "run_check", is_flag=True,
              help="Run `haproxy -c` on the rendered config; writes nothing unless --write is given too.")
@click.option("--write", "write", is_flag=True, help="With --check: write the config once it passed.")
@click.option("--plan", "show_plan", is_flag=True,
              help="Print what applying would do (runtime API commands or a reload, and why). Touches nothing.")
@_command
def render(dry_run: bool, show_diff: bool, run_check: bool, write: bool, show_plan: bool, **params: Any) -> int:
    """Read Consul once and render haproxy.cfg.

    Without --dry-run, --diff, --plan or --check the result is validated and written to
    haproxy.config_path atomically, without reloading HAProxy (use `run --once` to reload too).
    --check only checks (`haproxy -c`), unless --write asks for the file too: a check that
    replaced the live file would be no check.
    """
    if write and (dry_run or show_diff or show_plan or not run_check):
        raise click.UsageError("--write goes with --check alone (plain `render` writes; --dry-run, --diff and "
                               "--plan touch nothing)")
    from haproxy_sync.apply import check_prepared, write_live
    from haproxy_sync.pipeline import read_and_prepare
    from haproxy_sync.render import load_template

    settings = _load(params)
    _configure_logs(settings)
    template = load_template(settings.template_path())
    features = haproxy.features(settings.haproxy.binary)
    one = asyncio.run(read_and_prepare(settings, template, features))
    prepared = one.prepared
    for item in prepared.routing.unrouted:
        click.echo(f"not routed: {item.service}: {item.reason}", err=True)
    if run_check:
        check_prepared(settings, template, features, prepared)
    if show_plan:
        for line in _plan_lines(settings, one):
            click.echo(line)
        return EXIT_OK
    text = prepared.text
    if show_diff:
        diff = list(difflib.unified_diff(
            (one.live or "").splitlines(keepends=True), text.splitlines(keepends=True),
            str(settings.haproxy.config_path), "rendered",
        ))
        click.echo("".join(diff), nl=False)
        return EXIT_CHANGES if diff else EXIT_OK
    if dry_run:
        click.echo(text, nl=False)
        return EXIT_OK
    if run_check and not write:
        click.echo(f"ok: the rendered config passed haproxy -c; nothing written (--write writes "
                   f"{settings.haproxy.config_path})", err=True)
        return EXIT_OK
    write_live(settings, text, prepared.routes)
    click.echo(f"wrote {settings.haproxy.config_path} and {settings.haproxy.routes_map_path}", err=True)
    return EXIT_OK


@main.command(epilog=EXIT_CODES_HELP)
@_settings_options
@_command
def check(**params: Any) -> int:
    """Validate the config file and the template, without Consul or a running HAProxy.

    Every problem of the config file is reported at once. The template is rendered with a sample
    catalog and the result goes through `haproxy -c` (HAProxy must be installed: found as `run`
    finds it, on PATH and then in /usr/sbin and /usr/local/sbin).
    """
    from haproxy_sync.apply import check_prepared
    from haproxy_sync.pipeline import check_template, prepare, sample
    from haproxy_sync.render import load_template

    settings = _load(params)
    _configure_logs(settings)
    template = load_template(settings.template_path())
    observed = sample(settings)
    features = haproxy.features(settings.haproxy.binary)
    prepared = prepare(settings, template, features, observed.routing, observed.snapshot)
    check_prepared(settings, template, features, prepared)  # no HAProxy to check with is an error, as for run
    check_template(settings, template, features)  # slot lines and the map, which haproxy -c cannot miss
    click.echo(f"ok: config {settings.source or '(defaults)'}; template {settings.template_path()} rendered with a "
               f"sample catalog and passed haproxy -c ({haproxy.find_binary(settings.haproxy.binary)}, "
               f"HAProxy {features.version_text})")
    return EXIT_OK


def _plan_lines(settings: Settings, one: OneRead) -> list[str]:
    """``render --plan``: the decision the running daemon would take on this read, and what changes.

    The daemon's own ``/status`` tells what a file cannot: whether HAProxy is confirmed running the
    live config, and whether a re-read of settings owes a reload. Without a daemon to ask, the plan is
    the one a daemon that applied the live files would make.
    """
    from haproxy_sync.pipeline import explain
    from haproxy_sync.status import daemon_view

    view, error = daemon_view(settings)
    if error:
        click.echo(f"note: {error}; planned as if a daemon ran the live files", err=True)
    if view is None:
        return explain(settings, one, one.decide(settings))
    return explain(settings, one, one.decide(settings, confirmed=view.confirmed, reload_owed=view.reload_owed))


@main.command(epilog="Exit codes: 0 in step, 1 drift between Consul and HAProxy or HAProxy unreachable.")
@_settings_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of the table.")
@_command
def status(as_json: bool, **params: Any) -> int:
    """Consul against HAProxy per backend: instances, servers by state, drift, and the daemon's last apply.

    Works as a check command: exit 1 when there is drift or HAProxy cannot be reached.
    """
    from haproxy_sync.status import gather, to_json, to_table

    settings = _load(params)
    _configure_logs(settings)
    report = gather(settings)
    click.echo(to_json(report) if as_json else to_table(report))
    return EXIT_OK if report.healthy else EXIT_ERROR


@main.command()
@click.option("--listen", default="127.0.0.1:8500", show_default=True, metavar="HOST:PORT",
              help="Where the Consul HTTP API listens.")
@click.option("--token", envvar="DEVCONSUL_TOKEN", default=None,
              help="Switch ACLs on with this management token, default policy deny; token-less "
                   "requests are the anonymous token's, which may read nothing (env DEVCONSUL_TOKEN).")
@_command
def devconsul(listen: str, token: str | None) -> int:
    """Serve an in-memory Consul HTTP API (agent, health, catalog, blocking queries) for local use."""
    from haproxy_sync.dev import devconsul as dc
    from haproxy_sync.dev.ports import bind_refusal

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"{listen!r} is not HOST:PORT", param_hint="--listen")
    logs.configure("info", "text")
    try:
        dc.run_forever(host, int(port), token=token)
    except OSError as exc:
        raise Failure(f"devconsul: {bind_refusal(exc, host, int(port), '--listen')}") from None
    return EXIT_OK


def _canary_share_option(_: click.Context, param: click.Parameter, value: str) -> str:
    """``--canary``: a share as the config takes it, or the usage error that says why not."""
    if value:
        try:
            parse_canary_share(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param=param) from None
    return value


@main.command()
@click.option("--instances", default=7, show_default=True, type=click.IntRange(1, 200),
              help="App instances to start and register as `cabify`.")
@click.option("--http-port", default=8080, show_default=True, type=click.IntRange(1, 65535),
              help="Where HAProxy serves the app.")
@click.option("--https-port", default=8443, show_default=True, type=click.IntRange(0, 65535),
              help="Where HAProxy serves HTTPS, with a self-signed certificate for localhost and *.localhost "
                   "made at start (0: no HTTPS).")
@click.option("--consul-port", default=8500, show_default=True, type=click.IntRange(0, 65535),
              help="Where the embedded Consul API listens (0: any free port).")
@click.option("--stats-port", default=8404, show_default=True, type=click.IntRange(1, 65535),
              help="HAProxy stats page and Prometheus exporter.")
@click.option("--metrics-port", default=9725, show_default=True, type=click.IntRange(0, 65535),
              help="haproxy-sync's own /metrics, /health, /ready and /status (0: off).")
@click.option("--workdir", type=click.Path(path_type=Path), default=None,
              help="Runtime directory for configs and sockets [default: a new temp dir, removed at exit].")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True,
              help="Least severe level logged by the daemon and devconsul.")
@click.option("--canary", "canary_share", default="", metavar="SHARE", callback=_canary_share_option,
              help="Also start a canary instance of cabify (tag `canary`) that gets SHARE of the requests, e.g. "
                   "10%, and turn on the X-Canary: always header that reaches it alone (docs/canary.md).")
@_command
def dev(instances: int, http_port: int, https_port: int, consul_port: int, stats_port: int, metrics_port: int,
        workdir: Path | None, log_level: str, canary_share: str) -> int:
    """Run a local sandbox: Consul API, app instances, HAProxy and the daemon, until Ctrl-C.

    Everything listens on 127.0.0.1. Requests to the HAProxy URL spread over the instances; stop an
    instance or deregister it through the Consul API and it leaves the rotation.
    """
    from haproxy_sync.dev.sandbox import Sandbox

    logs.configure(log_level, "text")
    binary = haproxy.find_binary("haproxy")
    if binary is None:
        raise Failure("HAProxy is not installed; run 'sudo apt-get install -y haproxy' (or scripts/sandbox)")
    sandbox = Sandbox(
        instances=instances, http_port=http_port, consul_port=consul_port, stats_port=stats_port,
        metrics_port=metrics_port, workdir=workdir, haproxy_binary=binary, log_level=log_level,
        canary_share=canary_share, https_port=https_port,
    )
    return sandbox.run()


@main.command("systemd-unit")
@click.option("--exec-path", default="/opt/haproxy-sync/bin/haproxy-sync", show_default=True,
              help="Path of the haproxy-sync executable on the host.")
@click.option("--user", default="haproxy-sync", show_default=True, help="User the service runs as.")
@click.option("--group", default="haproxy", show_default=True,
              help="HAProxy's group, added to the user's own as a supplementary group (for HAProxy's sockets).")
@click.option("--config", "config_path", default="/etc/haproxy-sync/config.toml", show_default=True,
              help="Config file the service reads.")
def systemd_unit(exec_path: str, user: str, group: str, config_path: str) -> None:
    """Print the systemd unit for `systemctl start haproxy-sync`."""
    from haproxy_sync.systemd import unit_text

    click.echo(unit_text(exec_path=exec_path, user=user, group=group, config_path=config_path), nl=False)


def entrypoint() -> None:
    """Console-script entry: click's usage errors exit 64 so that 2 can mean "changes" for --diff."""
    try:
        main.main(prog_name="haproxy-sync", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE if isinstance(exc, click.UsageError) else EXIT_ERROR)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    entrypoint()
