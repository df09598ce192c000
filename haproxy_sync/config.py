"""Settings: built-in defaults < TOML file < Consul's environment names < command-line flags.

The schema below is the single description of every setting: the loader, the error messages, ``check``
and the README's config reference all come from it. Validation collects every problem before it
fails, so an operator fixing a config file sees all of its mistakes in one run, each naming where the
value came from (file and key, environment variable, or flag) and what is allowed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import grp
import ipaddress
import os
import pwd
import socket
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from haproxy_sync import haproxy, rules
from haproxy_sync.values import (
    parse_alpn,
    parse_argv,
    parse_basic_auth,
    parse_bind,
    parse_bool,
    parse_bool_or_inherit,
    parse_canary_share,
    parse_ciphers,
    parse_consul_address,
    parse_duration,
    parse_enterprise_name,
    parse_filter_expression,
    parse_haproxy_path,
    parse_haproxy_path_or_none,
    parse_header_name_or_none,
    parse_header_value,
    parse_health_path,
    parse_host,
    parse_host_patterns,
    parse_int_range,
    parse_listen,
    parse_networks,
    parse_octal_mode,
    parse_one_of,
    parse_path,
    parse_path_or_none,
    parse_percent,
    parse_route_path,
    parse_safe_name,
    parse_string,
    parse_tag,
    parse_tag_or_none,
    parse_tls_version,
)

DEFAULT_CONFIG_PATH = Path("/etc/haproxy-sync/config.toml")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


class ConfigError(Exception):
    """Every problem found in the settings, one line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


# --- the schema ---


@dataclass(frozen=True)
class Setting:
    """One key: how to parse it, its default, the environment variable that sets it, what it means."""

    parse: Callable[[Any], Any]
    default: Any
    help: str
    env: str | None = None


def setting(
    parse: Callable[[Any], Any], default: Any, help: str, env: str | None = None, *, keeps_default: bool = False,
    secret: bool = False,
) -> Any:
    """A settings field that is the key's one declaration: how to parse it, its default as a file would
    write it, what it means, the environment variable that sets it. The loader reads these from the
    dataclass (:data:`SCHEMA`), and so does the README's reference.

    ``keeps_default``: the field also defaults to the parsed default (for values built in code, such as
    a discovered service's settings); otherwise the loader always passes every key. ``secret``: left out
    of the dataclass's repr (a token must not reach a log through one).
    """
    metadata = {"setting": Setting(parse, default, help, env)}
    if keeps_default:
        return field(default=parse(default), repr=not secret, metadata=metadata)
    return field(repr=not secret, metadata=metadata)


@dataclass(frozen=True)
class ServiceSettings:
    name: str = setting(parse_safe_name, None, "Consul service name (required).")
    backend: str = setting(parse_safe_name, None, "HAProxy backend name; default: the service name.")
    balance: str = setting(rules.balance, "roundrobin", "Load-balancing algorithm.", keeps_default=True)
    health_path: str = setting(parse_health_path, "/health", "Path of HAProxy's own HTTP check.", keeps_default=True)
    host: str = setting(
        parse_host, "",
        "Route requests with this Host header here; the first service is the default.",
        keeps_default=True,
    )
    path: str = setting(
        parse_route_path, "",
        "Route this path prefix here (whole segments, up to 3); with `host`, on that host only.",
        keeps_default=True,
    )
    filter: str = setting(
        parse_filter_expression, "",
        "Consul `filter` expression applied to this service's instances.",
        keeps_default=True,
    )
    guard: bool = setting(
        parse_bool, True,
        "Empty-backend guard: hold a big drop of healthy servers and re-read first.",
        keeps_default=True,
    )
    min_servers: int = setting(
        parse_int_range(0, 100_000), 1,
        "Guard: fewer healthy servers than this is a big drop.",
        keeps_default=True,
    )
    max_drop: float = setting(
        parse_percent, "50%",
        "Guard: losing more than this share of healthy servers at once is a big drop.",
        keeps_default=True,
    )
    canary_tag: str = setting(
        parse_tag_or_none, "",
        "Instances with this Consul tag are canaries and get `canary_share` of the requests (docs/canary.md).",
        keeps_default=True,
    )
    canary_share: float = setting(
        parse_canary_share, "10%",
        "Canaries' share of the requests, whatever their number (0% to below 100%); with `canary_tag`.",
        keeps_default=True,
    )
    https_redirect: bool | None = setting(
        parse_bool_or_inherit, "",
        "Redirect this service's plain HTTP requests to HTTPS (301); empty: `tls.https_redirect`.",
        keeps_default=True,
    )
    discovered: bool = False  # learned from Consul by tag, not named in the config


@dataclass(frozen=True)
class LogSettings:
    level: str = setting(parse_one_of(LOG_LEVELS), "info", "Least severe level logged: debug, info, warning, error.")
    format: str = setting(parse_one_of(LOG_FORMATS), "text", "One line per event: key=value `text` or `json`.")


@dataclass(frozen=True)
class ConsulSettings:
    address: str = setting(
        parse_consul_address, "http://127.0.0.1:8500",
        "Consul agent: host:port, http(s)://host:port, or unix:///path/to/socket (HTTP on a unix socket).",
        "CONSUL_HTTP_ADDR",
    )
    ssl: bool = setting(parse_bool, False, "Use HTTPS when `address` has no scheme.", "CONSUL_HTTP_SSL")
    ssl_verify: bool = setting(
        parse_bool, True,
        "Verify Consul's certificate; false is logged at start (the token goes to whoever answers).",
        "CONSUL_HTTP_SSL_VERIFY",
    )
    token: str = setting(
        parse_string, "", "ACL token (prefer `token_file`). Never logged.", "CONSUL_HTTP_TOKEN", secret=True,
    )
    token_file: str = setting(
        parse_string, "",
        "File holding the ACL token; wins over `token` set at the same level (as in Consul's CLI).",
        "CONSUL_HTTP_TOKEN_FILE",
    )
    auth: str = setting(
        parse_basic_auth, "",
        "HTTP basic auth `user:password` (a proxy in front of Consul). Never logged.",
        "CONSUL_HTTP_AUTH", secret=True,
    )
    ca_file: str = setting(parse_string, "", "CA bundle to verify Consul's certificate.", "CONSUL_CACERT")
    ca_path: str = setting(parse_string, "", "Directory of CA certificates to verify Consul's certificate.",
                           "CONSUL_CAPATH")
    cert_file: str = setting(parse_string, "", "Client certificate for mutual TLS.", "CONSUL_CLIENT_CERT")
    key_file: str = setting(parse_string, "", "Client key for mutual TLS.", "CONSUL_CLIENT_KEY")
    tls_server_name: str = setting(
        parse_string, "",
        "Server name to verify Consul's certificate against.",
        "CONSUL_TLS_SERVER_NAME",
    )
    datacenter: str = setting(parse_string, "", "Datacenter to query; empty means the agent's own.")
    namespace: str = setting(
        parse_enterprise_name, "",
        "Consul Enterprise namespace to read (sent as `ns=`); Consul CE refuses any, `default` too.",
        "CONSUL_NAMESPACE",
    )
    partition: str = setting(
        parse_enterprise_name, "",
        "Consul Enterprise admin partition to read (sent as `partition=`); Consul CE refuses any.",
        "CONSUL_PARTITION",
    )
    wait: float = setting(
        parse_duration, "5m",
        "Blocking query wait (Consul's default, capped at 10m); shorter costs idle CPU.",
    )
    backoff_max: float = setting(parse_duration, "30s", "Longest pause between retries after Consul errors.")
    max_connections: int = setting(
        parse_int_range(1, 100_000), 4096,
        "Connections to Consul (one per watched service); keep Consul's `http_max_conns_per_client` above it.",
    )
    start_spread: float = setting(
        parse_duration, "1s",
        "Watches started together spread their first reads (0.25 ms each, at most this).",
    )

    @property
    def url(self) -> urllib.parse.SplitResult:
        return urllib.parse.urlsplit(self.address)


@dataclass(frozen=True)
class DiscoverySettings:
    enabled: bool = setting(parse_bool, True, "Also route every Consul service whose instances carry `tag`.")
    tag: str = setting(parse_tag, "haproxy-sync", "The tag that asks haproxy-sync to route a service.")
    filter: str = setting(
        parse_filter_expression, "",
        "Consul `filter` expression applied to every discovered service.",
    )
    max_drop: float = setting(
        parse_percent, "50%",
        "Guard: more than this share of tagged services gone at once is held and Consul read again; 100% is off.",
    )
    hosts: tuple[str, ...] = setting(
        parse_host_patterns, ["*"],
        "Hosts a discovered service may claim: exact names or `*.suffix`; `*` is any host and path-only routes. "
        "Restrict it (`[\"*.branches.example.com\"]`): the default backend serves every host nobody claims.",
    )
    route_grace: float = setting(
        parse_duration, "5m",
        "A route whose discovered holder left stays reserved for it this long, so no newcomer takes it in a gap.",
    )


@dataclass(frozen=True)
class HAProxySettings:
    binary: str = setting(parse_string, "haproxy", "HAProxy executable used for `haproxy -c`.")
    config_path: Path = setting(parse_haproxy_path, "/etc/haproxy/haproxy.cfg", "Where the rendered config is written.")
    template: Path | None = setting(parse_path_or_none, "", "Jinja2 template; empty means the built-in one.")
    routes_map: Path | None = setting(
        parse_haproxy_path_or_none, "",
        "HAProxy map file of host and path routes; empty: routes.map beside config_path.",
    )
    master_socket: Path = setting(parse_path, "/run/haproxy-master.sock", "HAProxy master CLI socket (reloads).")
    stats_socket: Path = setting(parse_haproxy_path, "/run/haproxy/admin.sock", "HAProxy runtime API socket.")
    server_state_file: Path = setting(
        parse_haproxy_path, "/var/lib/haproxy/server-state",
        "Server state carried across reloads.",
    )
    stats_file: Path | None = setting(
        parse_haproxy_path_or_none, "",
        "HAProxy 3.0: counters carried across reloads (dump stats-file); empty: "
        "stats-file beside server_state_file. Unused on 2.6.",
    )
    reload_command: tuple[str, ...] = setting(
        parse_argv, [],
        "Argv to reload HAProxy (e.g. systemctl); empty reloads through the master socket.",
    )
    reload_timeout: float = setting(
        parse_duration, "10s",
        "How long a new worker may take to show up before HAProxy's master is asked how the reload stands.")
    reload_max_wait: float = setting(
        parse_duration, "2m",
        "How long a reload the master is still loading (big maps, many certificates) is waited for, no second "
        "reload meanwhile, before it is called failed.")
    http_bind: str = setting(parse_bind, "*:80", "Where the HTTP frontend listens.")
    stats_bind: str = setting(parse_bind, "127.0.0.1:8404", "Stats page and Prometheus exporter.")
    canary_header: str = setting(
        parse_header_name_or_none, "",
        "Requests with this header set to `canary_header_value` go to the canaries only (docs/canary.md); empty: off.",
    )
    canary_header_value: str = setting(parse_header_value, "always", "The value of `canary_header` that asks for them.")
    maxconn: int = setting(parse_int_range(1, 1_000_000), 2000, "Global maxconn; keep it under the fd limit.")
    hard_stop_after: float = setting(
        parse_duration, "30s",
        "Old workers are stopped this long after a reload (cuts long streams); 0 is off.",
    )
    config_mode: int = setting(parse_octal_mode, "0640", "Permissions of the rendered haproxy.cfg (octal).")
    config_group: str = setting(parse_string, "", "Group of the rendered haproxy.cfg; empty keeps the existing file's.")
    user: str = setting(parse_string, "haproxy", "User HAProxy's workers drop to; empty keeps the starting user.")
    group: str = setting(parse_string, "haproxy", "Group of the workers and of the runtime socket; empty: none.")
    log_target: str = setting(
        parse_string, "/dev/log local0",
        "HAProxy `log` target (syslog socket, or `stderr format short local0`).",
    )

    @property
    def routes_map_path(self) -> Path:
        """Routes live in a map file so that HAProxy can change them at runtime (``add/set/del map``)."""
        return self.routes_map or self.config_path.parent / "routes.map"

    @property
    def stats_file_path(self) -> Path:
        """Where HAProxy 3.0 preloads counters from at a reload (``stats-file``); haproxy-sync fills it."""
        return self.stats_file or self.server_state_file.parent / "stats-file"


@dataclass(frozen=True)
class SyncSettings:
    wait_min: float = setting(parse_duration, "10ms", "Quiet time after a change before applying (resets per change).")
    wait_max: float = setting(parse_duration, "1s", "Longest a change waits for quiet before it is applied.")
    first_change_at_once: bool = setting(
        parse_bool, True,
        "A change after `wait_min` without changes is applied at once; the ones that follow it within `wait_min` fold.",
    )
    slots: int = setting(
        parse_int_range(1, 10_000), 8,
        "Server slots made per backend; doubled (add server) when full.",
    )
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = setting(
        parse_networks, [],
        "CIDR networks instance addresses must be in (`[\"10.0.0.0/8\"]`); empty: any unicast address. Loopback, "
        "link-local, unspecified, multicast and reserved addresses are refused unless a listed network names them.",
        "HAPROXY_SYNC_NETWORKS",
    )
    host_names: bool = setting(
        parse_bool, False,
        "Route instances addressed by a host name (HAProxy resolves it blocking at every check and reload).",
    )
    drain_timeout: float = setting(
        parse_duration, "10s",
        "The longest a leaving or critical instance drains (weight 0)"
        " before maintenance; on HAProxy 3.0 the drain ends sooner, once HAProxy reports the server idle.",
    )
    reload_min_interval: float = setting(
        parse_duration, "1s",
        "Least time between two reloads; changes meanwhile fold into the next.",
    )
    hold_down: float = setting(
        parse_duration, "0s",
        "Flap damping: a new health status must last this long before it applies; 0 is off.",
    )
    guard_delay: float = setting(
        parse_duration, "2s",
        "Guard: how long a big drop is held before Consul is read again to confirm it.",
    )
    reconcile_interval: float = setting(
        parse_duration, "30s",
        "How often HAProxy's servers are read back and drift repaired; 0 turns it off.",
    )
    watch_files: bool = setting(
        parse_bool, True,
        "Re-read config and template when their files change, as SIGHUP does.",
    )
    runtime_api: bool = setting(
        parse_bool, True,
        "Apply membership, health and weight changes through the Runtime API, without a reload.",
    )
    ready_without_consul: float = setting(
        parse_duration, "10s",
        "At start, with no answer from Consul this long and HAProxy known to run the live config, tell systemd "
        "READY (HAProxy serves the last good config; /ready stays 503 until Consul answers); 0 waits for Consul.",
    )


@dataclass(frozen=True)
class TlsSettings:
    """The HTTPS frontend: certificates from a directory, rotated on the Runtime API (docs/tls.md)."""

    enabled: bool = setting(parse_bool, False, "Serve HTTPS on `tls.bind` (the same routes as HTTP).",
                            keeps_default=True)
    cert_dir: Path = setting(
        parse_path, "/etc/haproxy-sync/certs",
        "Certificates to serve: one PEM per name (certificate, chain, then key); `default.pem` is the default.",
        keeps_default=True,
    )
    store_dir: Path = setting(
        parse_haproxy_path, "/etc/haproxy/certs",
        "Where haproxy-sync writes the validated certificates and the crt-list HAProxy loads (its own directory).",
        keeps_default=True,
    )
    bind: str = setting(parse_bind, "*:443", "Where the HTTPS frontend listens.", keeps_default=True)
    alpn: str = setting(parse_alpn, "h2,http/1.1", "ALPN protocols offered, in order.", keeps_default=True)
    min_version: str = setting(parse_tls_version, "TLSv1.2", "Oldest TLS version accepted.", keeps_default=True)
    ciphers: str = setting(
        parse_ciphers,
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
        "TLS 1.2 ciphers (forward secret AEAD only: Mozilla's intermediate set).", keeps_default=True,
    )
    ciphersuites: str = setting(
        parse_ciphers, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
        "TLS 1.3 ciphersuites.", keeps_default=True,
    )
    hsts: bool = setting(parse_bool, False, "Send Strict-Transport-Security on HTTPS answers.", keeps_default=True)
    hsts_max_age: float = setting(parse_duration, "8760h", "HSTS max-age (a year).", keeps_default=True)
    https_redirect: bool = setting(
        parse_bool, False,
        "Redirect plain HTTP requests to HTTPS (301) for every service that does not say otherwise.",
        keeps_default=True,
    )
    expiry_warning: float = setting(
        parse_duration, "504h",
        "A certificate expiring within this long is a warning and `haproxy_sync_tls_certificates_expiring`.",
        keeps_default=True,
    )
    check_interval: float = setting(
        parse_duration, "1m", "How often the certificate directory is read again besides its file watch.",
        keeps_default=True,
    )

    @property
    def crt_list(self) -> Path:
        return self.store_dir / "crt-list.txt"


@dataclass(frozen=True)
class MetricsSettings:
    listen: str = setting(
        parse_listen, "127.0.0.1:9725",
        "Prometheus /metrics, /health, /ready and /status; empty turns it off.",
    )
    stale_after: float = setting(
        parse_duration, "3m",
        "/ready fails when a Consul watch's data has not been known current for this long (an agent "
        "restart shorter than this keeps it ready).",
    )


def _schema(cls: type) -> dict[str, Setting]:
    """The keys of one section, in declaration order: each dataclass field that carries a Setting."""
    return {f.name: f.metadata["setting"] for f in dataclasses.fields(cls) if "setting" in f.metadata}


#: Every section's keys, from the one declaration of each (the fields above); the README reference too.
SCHEMA: dict[str, dict[str, Setting]] = {
    "log": _schema(LogSettings),
    "consul": _schema(ConsulSettings),
    "discovery": _schema(DiscoverySettings),
    "haproxy": _schema(HAProxySettings),
    "sync": _schema(SyncSettings),
    "metrics": _schema(MetricsSettings),
    "tls": _schema(TlsSettings),
}
SERVICE_SCHEMA: dict[str, Setting] = _schema(ServiceSettings)


DEFAULT_SERVICES = ({"name": "cabify"},)


# --- the typed result ---


@dataclass(frozen=True)
class Settings:
    """Everything haproxy-sync is told, validated: one immutable value per run (re-read on SIGHUP)."""

    log: LogSettings
    consul: ConsulSettings
    haproxy: HAProxySettings
    sync: SyncSettings
    metrics: MetricsSettings
    discovery: DiscoverySettings
    services: tuple[ServiceSettings, ...]
    source: Path | None = None
    warnings: tuple[str, ...] = ()  # usable, but worth an operator's attention (logged at start)
    tls: TlsSettings = field(default_factory=TlsSettings)

    def template_path(self) -> Path:
        return self.haproxy.template or default_template_path()

    @property
    def address_policy(self) -> rules.AddressPolicy:
        """Where a registrant may send the edge's traffic: ``sync.networks``, ``sync.host_names``, and never
        the edge's own frontends (its addresses with a port HAProxy binds)."""
        ports = frozenset(int(bind.rpartition(":")[2]) for bind in (self.haproxy.http_bind, self.haproxy.stats_bind)
                          if bind.rpartition(":")[2].isdigit())
        return rules.AddressPolicy(self.sync.networks, self.sync.host_names, local_addresses(), ports)


@functools.cache
def local_addresses() -> frozenset[str]:
    """The addresses of this machine's interfaces, as ``rules.address`` writes them (read once)."""
    found = set()
    for addresses in psutil.net_if_addrs().values():
        for item in addresses:
            if item.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(ValueError):
                    found.add(str(ipaddress.ip_address(item.address.split("%")[0])))
    return frozenset(found)


def default_template_path() -> Path:
    return Path(__file__).parent / "templates" / "haproxy.cfg.j2"


# --- loading ---


@dataclass
class _Value:
    raw: Any
    origin: str  # where it came from, for error messages


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found; create it or drop --config"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: permission denied reading the config file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, expected a TOML file"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    if not data:
        # A truncated or emptied file must never turn into "all defaults": those manage
        # /etc/haproxy/haproxy.cfg for a service called cabify.
        raise ConfigError([f"{path}: the config file holds no settings (empty, or only comments); "
                           "restore it, or drop --config to run on the built-in defaults"])
    return data


def _layer_file(
    data: Mapping[str, Any], where: str, values: dict[str, dict[str, _Value]], problems: list[str]
) -> list[tuple[dict[str, Any], str]] | None:
    """Merge a parsed TOML document into ``values``; returns its services, if it names any."""
    services: list[tuple[dict[str, Any], str]] | None = None
    for section, content in data.items():
        if section == "services":
            if not isinstance(content, list) or not all(isinstance(s, dict) for s in content):
                problems.append(f"{where}: services: must be an array of tables ([[services]])")
                continue
            services = [(dict(s), f"{where}: services[{i}]") for i, s in enumerate(content)]
            continue
        if section not in SCHEMA:
            hint = _nearest(section, [*SCHEMA, "services"], "[{}]")
            problems.append(f"{where}: [{section}]: unknown section; {hint}")
            continue
        if not isinstance(content, dict):
            problems.append(f"{where}: {section}: must be a table ([{section}])")
            continue
        for key, raw in content.items():
            if key not in SCHEMA[section]:
                problems.append(f"{where}: {section}.{key}: unknown key; {_nearest(key, SCHEMA[section])}")
                continue
            values[section][key] = _Value(raw, f"{where}: {section}.{key}")
    return services


def _nearest(name: str, known: Iterable[str], form: str = "{}") -> str:
    """"did you mean `address`?" for a typo (difflib's closest name, as git and cargo suggest), else
    the whole list: a key that resembles none is more likely from another tool's config."""
    choices = list(known)
    close = difflib.get_close_matches(name.lower(), choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{form.format(close[0])}`?"
    return f"known: {', '.join(form.format(choice) for choice in choices)}"


def load_settings(
    config_path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    services: Sequence[str] = (),
) -> Settings:
    """Build the one validated :class:`Settings`, or raise :class:`ConfigError` with every problem.

    ``config_path=None`` means the default path, which may be missing; a path given explicitly must
    exist. ``overrides`` maps ``"section.key"`` to values from command-line flags; ``services``
    (from ``--service``) replaces the configured list.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    warnings: list[str] = []
    values: dict[str, dict[str, _Value]] = {
        section: {key: _Value(s.default, f"default {section}.{key}") for key, s in keys.items()}
        for section, keys in SCHEMA.items()
    }
    service_tables: list[tuple[dict[str, Any], str]] = [(dict(s), "default services") for s in DEFAULT_SERVICES]

    source: Path | None = None
    path = config_path or DEFAULT_CONFIG_PATH
    if config_path is not None or path.exists():
        source = path
        from_file = _layer_file(_read_toml(path), str(path), values, problems)
        if from_file is not None:
            service_tables = from_file

    for section, keys in SCHEMA.items():
        for key, setting in keys.items():
            if setting.env and env.get(setting.env, "") != "":
                values[section][key] = _Value(env[setting.env], f"environment {setting.env}")

    for dotted, raw in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        values[section][key] = _Value(raw, f"flag for {dotted}")
    if services:
        service_tables = [({"name": name}, f"--service {name}") for name in services]

    parsed: dict[str, dict[str, Any]] = {section: {} for section in SCHEMA}
    for section, keys in values.items():
        for key, value in keys.items():
            try:
                parsed[section][key] = SCHEMA[section][key].parse(value.raw)
            except ValueError as exc:
                problems.append(f"{value.origin}: {exc}")

    service_settings = _parse_services(service_tables, problems)
    consul_values = parsed["consul"]
    if not problems:
        _apply_consul_rules(consul_values, values["consul"], problems, warnings)
        # A link at a file haproxy-sync replaces: refused by every command, before anything runs.
        problems.extend(haproxy.refuse_symlinks(haproxy.owned_files(HAProxySettings(**parsed["haproxy"]))))
        if parsed["sync"]["wait_max"] < parsed["sync"]["wait_min"]:
            problems.append(f"{values['sync']['wait_max'].origin}: must not be shorter than sync.wait_min")
    if parsed.get("sync", {}).get("networks") and parsed.get("sync", {}).get("host_names"):
        problems.append("sync.host_names = true with sync.networks: haproxy-sync does not resolve names, so the "
                        "networks cannot confine them; use addresses, or drop sync.networks")
    if problems:
        raise ConfigError(problems)
    return Settings(
        log=LogSettings(**parsed["log"]),
        consul=ConsulSettings(**consul_values),
        haproxy=HAProxySettings(**parsed["haproxy"]),
        sync=SyncSettings(**parsed["sync"]),
        metrics=MetricsSettings(**parsed["metrics"]),
        services=service_settings,
        discovery=DiscoverySettings(**parsed["discovery"]),
        source=source,
        warnings=tuple(warnings),
        tls=TlsSettings(**parsed["tls"]),
    )


def _parse_services(tables: list[tuple[dict[str, Any], str]], problems: list[str]) -> tuple[ServiceSettings, ...]:
    result: list[ServiceSettings] = []
    if not tables:
        problems.append("services: at least one service must be routed")
    for table, where in tables:
        fields: dict[str, Any] = {}
        for key, raw in table.items():
            if key not in SERVICE_SCHEMA:
                problems.append(f"{where}.{key}: unknown key; {_nearest(key, SERVICE_SCHEMA)}")
                continue
            try:
                fields[key] = SERVICE_SCHEMA[key].parse(raw)
            except ValueError as exc:
                problems.append(f"{where}.{key}: {exc}")
        if "name" not in table:
            problems.append(f"{where}: name is required")
            continue
        if "name" not in fields:
            continue
        fields.setdefault("backend", fields["name"])
        result.append(ServiceSettings(**fields))
    problems += [f"services: backend {s.backend!r}: a name ending in {rules.CANARY_BACKEND_SUFFIX!r} is kept for "
                 "canary backends (docs/canary.md); choose another" for s in result
                 if s.backend.endswith(rules.CANARY_BACKEND_SUFFIX)]
    for attr in ("name", "backend"):
        seen = [getattr(s, attr) for s in result]
        for dup in sorted({x for x in seen if seen.count(x) > 1}):
            problems.append(f"services: {attr} {dup!r} appears more than once")
    return tuple(result)


def token_file_exposure(path: Path) -> str:
    """Who besides the daemon can read the token file: "" when nobody, else a short description.

    Group-readable is fine for a group of the daemon's own (the role's ``root:haproxy-sync 0640``);
    a shared group or others reading the token is not.
    """
    st = path.stat()
    if st.st_mode & 0o004:
        return f"readable by others (mode {st.st_mode & 0o777:04o})"
    if st.st_mode & 0o040:
        try:
            group = grp.getgrgid(st.st_gid)
        except KeyError:
            return f"readable by group {st.st_gid} (mode {st.st_mode & 0o777:04o})"
        me = pwd.getpwuid(os.geteuid())
        mine = group.gr_gid == me.pw_gid or me.pw_name in group.gr_mem
        if set(group.gr_mem) - {me.pw_name} or not mine:
            return f"readable by group {group.gr_name} (mode {st.st_mode & 0o777:04o})"
    return ""


def token_problem(token: str) -> str:
    """What keeps ``token`` out of an HTTP header ("" when nothing does); the token is never shown.

    A second line or a control character would split or end the ``X-Consul-Token`` header (aiohttp
    refuses it at the first request, far from the cause); anything beyond printable ASCII is no token.
    """
    if not token:
        return "nothing (it is empty)"
    if "\n" in token or "\r" in token:
        return "more than one line"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in token):
        return "a control character"
    if not all(0x20 <= ord(ch) < 0x7F for ch in token):
        return "characters outside printable ASCII"
    return ""


def _apply_consul_rules(
    consul: dict[str, Any], origins: Mapping[str, _Value], problems: list[str], warnings: list[str]
) -> None:
    """Consul's own conventions: CONSUL_HTTP_SSL picks https, a token file supplies the token.

    Between ``token`` and ``token_file`` the higher layer wins (a flag over the environment over the
    file); set at the same level, the file wins, as Consul's client has it (``-token-file`` over
    ``-token``, ``CONSUL_HTTP_TOKEN_FILE`` over ``CONSUL_HTTP_TOKEN``).
    """
    raw_address = str(origins["address"].raw)
    if consul["ssl"] and "://" not in raw_address:
        consul["address"] = consul["address"].replace("http://", "https://", 1)
    if not consul["ssl_verify"] and consul["address"].startswith("https://"):
        warnings.append(f"{origins['ssl_verify'].origin}: Consul's certificate is not verified: whoever answers "
                        f"at {consul['address']} gets the ACL token; set a CA (consul.ca_file) instead")
    if consul["ca_path"] and not Path(consul["ca_path"]).is_dir():
        problems.append(f"{origins['ca_path'].origin}: {consul['ca_path']}: no such directory")
    file_wins = _layer(origins["token_file"].origin) >= _layer(origins["token"].origin)
    if consul["token_file"] and (file_wins or not consul["token"]):
        try:
            # Bytes, not text: a file that is not UTF-8 is a problem to report, not a traceback.
            token = Path(consul["token_file"]).read_bytes().decode("utf-8", errors="replace").strip()
        except OSError as exc:
            problems.append(f"{origins['token_file'].origin}: cannot read token file: {exc.strerror}")
        else:
            unfit = token_problem(token)
            if unfit:
                problems.append(f"{origins['token_file'].origin}: {consul['token_file']} holds {unfit}; "
                                "a token file holds one token on one line")
            consul["token"] = token
            exposed = token_file_exposure(Path(consul["token_file"]))
            if exposed:
                warnings.append(f"{origins['token_file'].origin}: {consul['token_file']} is {exposed}; "
                                "chmod 0600 it (or 0640 with a group of its own)")
    elif consul["token"] and (unfit := token_problem(consul["token"])):
        problems.append(f"{origins['token'].origin}: the token holds {unfit}; it is sent as the "
                        "X-Consul-Token header, so it must be one line of printable ASCII")
    for key in ("ca_file", "cert_file", "key_file"):
        if consul[key] and not Path(consul[key]).is_file():
            problems.append(f"{origins[key].origin}: {consul[key]}: no such file")
    if bool(consul["cert_file"]) != bool(consul["key_file"]):
        problems.append("consul: cert_file and key_file go together; set both or neither")


def _layer(origin: str) -> int:
    """Which layer a value came from, lowest first: default, file, environment, flag."""
    if origin.startswith("default "):
        return 0
    if origin.startswith("environment "):
        return 2
    if origin.startswith("flag for "):
        return 3
    return 1


def reference_markdown() -> str:
    """The README's config reference table, generated so that the docs cannot drift from the code."""
    rows = ["| key | default | environment | meaning |", "| --- | --- | --- | --- |"]
    for section, keys in SCHEMA.items():
        for key, setting in keys.items():
            rows.append(
                f"| `{section}.{key}` | `{_show_default(setting.default)}` | "
                f"{'`' + setting.env + '`' if setting.env else ''} | {setting.help} |"
            )
    for key, setting in SERVICE_SCHEMA.items():
        default = "" if setting.default is None else f"`{_show_default(setting.default)}`"
        rows.append(f"| `services[].{key}` | {default} |  | {setting.help} |")
    return "\n".join(rows)


def _show_default(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[]"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


if __name__ == "__main__":
    print(reference_markdown())
