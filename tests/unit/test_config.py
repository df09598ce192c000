from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from haproxy_sync import config
from haproxy_sync.config import ConfigError, load_settings
from haproxy_sync.values import parse_consul_address, parse_duration
from tests.helpers import cli

#: The least a config file holds (one with no settings at all is refused).
ONE_SERVICE = '[[services]]\nname = "cabify"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    settings = load_settings(env={})
    assert settings.source is None
    assert settings.consul.address == "http://127.0.0.1:8500"
    assert settings.consul.wait == 300.0
    assert [s.name for s in settings.services] == ["cabify"]
    assert settings.services[0].backend == "cabify"
    assert settings.haproxy.config_path == Path("/etc/haproxy/haproxy.cfg")
    assert settings.sync.wait_min == pytest.approx(0.010)


def test_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path / "nope.toml", env={})
    assert str(tmp_path / "nope.toml") in str(err.value) and "not found" in str(err.value)


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, """
[consul]
wait = "forever"
adress = "x"
[haproxy]
maxconn = 0
[sync]
wait_min = "1s"
[bogus]
[[services]]
name = "bad name"
balance = "fastest"
""")
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    problems = err.value.problems
    assert any(f"{path}: consul.wait: 'forever' is not a duration" in p for p in problems)
    assert any(f"{path}: consul.adress: unknown key" in p and "address" in p for p in problems)
    assert any(f"{path}: haproxy.maxconn: 0 is outside 1-1000000" in p for p in problems)
    assert any(f"{path}: [bogus]: unknown section" in p for p in problems)
    assert any("services[0].name" in p and "'bad name'" in p for p in problems)
    assert any("services[0].balance" in p and "roundrobin" in p for p in problems)
    assert len(problems) == 6, problems


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[consul\n")
    with pytest.raises(ConfigError, match=r"config.toml: invalid TOML"):
        load_settings(path, env={})


def test_layers_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, '[consul]\naddress = "10.0.0.1:8500"\ntoken = "from-file"\n')
    assert load_settings(path, env={}).consul.address == "http://10.0.0.1:8500"
    env = {"CONSUL_HTTP_ADDR": "https://consul.example:8501", "CONSUL_HTTP_TOKEN": "from-env"}
    settings = load_settings(path, env=env)
    assert settings.consul.address == "https://consul.example:8501"
    assert settings.consul.token == "from-env"
    flagged = load_settings(path, env=env, overrides={"consul.address": "127.0.0.2:9500"})
    assert flagged.consul.address == "http://127.0.0.2:9500"


def test_environment_errors_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"environment CONSUL_HTTP_ADDR: 'ftp://x' is not host:port"):
        load_settings(write(tmp_path, ONE_SERVICE), env={"CONSUL_HTTP_ADDR": "ftp://x"})


def test_consul_http_ssl_switches_scheme_only_without_one(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_SERVICE)
    assert load_settings(path, env={"CONSUL_HTTP_ADDR": "c:8501", "CONSUL_HTTP_SSL": "true"}).consul.address == (
        "https://c:8501"
    )
    assert load_settings(path, env={"CONSUL_HTTP_ADDR": "http://c:8500", "CONSUL_HTTP_SSL": "true"}).consul.address == (
        "http://c:8500"
    )


def test_token_file_is_read_and_token_never_in_repr(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    settings = load_settings(write(tmp_path, ONE_SERVICE), env={"CONSUL_HTTP_TOKEN_FILE": str(token)})
    assert settings.consul.token == "s3cret-token"
    assert "s3cret-token" not in repr(settings)


def test_unreadable_token_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read token file"):
        load_settings(write(tmp_path, f'[consul]\ntoken_file = "{tmp_path}/missing"\n'), env={})


def test_services_flag_replaces_the_file_list(tmp_path: Path) -> None:
    path = write(tmp_path, '[[services]]\nname = "api"\nbackend = "be_api"\nhost = "API.example.com"\n')
    settings = load_settings(path, env={})
    assert [(s.name, s.backend, s.host) for s in settings.services] == [("api", "be_api", "api.example.com")]
    assert [s.name for s in load_settings(path, env={}, services=["web", "db"]).services] == ["web", "db"]


def test_duplicate_backends_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, '[[services]]\nname = "a"\nbackend = "x"\n[[services]]\nname = "b"\nbackend = "x"\n')
    with pytest.raises(ConfigError, match="backend 'x' appears more than once"):
        load_settings(path, env={})


def test_wait_max_must_not_be_shorter_than_wait_min(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"must not be shorter than sync\.wait_min"):
        load_settings(write(tmp_path, '[sync]\nwait_min = "2s"\nwait_max = "1s"\n'), env={})


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25), ("60s", 60), ("5m", 300), ("1h", 3600), (2, 2.0), (1.5, 1.5), ("0", 0.0),
    # Go's forms, as consul-template's config writes them
    ("1m30s", 90), ("1.5s", 1.5), ("1h2m3.5s", 3723.5), ("500us", 0.0005), ("2h45m", 9900), (".5s", 0.5),
])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("bad", "says"), [
    ("soon", "'soon' is not a duration"), ("-1s", "cannot be negative"), ("1d", "is not a duration"),
    (True, "not true/false"), ("10", "'10' has no unit; write e.g. \"10s\""), ("1m30", "is not a duration"),
    (["1s"], "got an array"),
])
def test_bad_durations(bad: object, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_duration(bad)


def test_a_go_duration_configures_every_duration_setting(tmp_path: Path) -> None:
    """Every duration key takes Go's forms: the file is written as a consul-template user would."""
    keys = [(section, key) for section, keys in config.SCHEMA.items() for key, setting in keys.items()
            if setting.parse is parse_duration]
    assert len(keys) >= 15
    by_section: dict[str, list[str]] = {}
    for section, key in keys:
        by_section.setdefault(section, []).append(f'{key} = "1m30s"')
    text = "".join(f"[{section}]\n" + "\n".join(lines) + "\n" for section, lines in by_section.items())
    settings = load_settings(write(tmp_path, text + ONE_SERVICE), env={})
    assert all(getattr(getattr(settings, section), key) == 90.0 for section, key in keys)


def test_devconsul_and_the_settings_share_one_duration_parser() -> None:
    from haproxy_sync import durations
    from haproxy_sync.dev.devconsul import decode, pipeline
    assert decode.parse_go_duration is pipeline.parse_go_duration is durations.parse_go_duration


@pytest.mark.parametrize(("raw", "url"), [
    ("127.0.0.1:8500", "http://127.0.0.1:8500"),
    ("consul.service:8500", "http://consul.service:8500"),
    ("https://consul:8501", "https://consul:8501"),
    ("http://[::1]:8500", "http://[::1]:8500"),
    ("consul", "http://consul:8500"),
])
def test_consul_address_forms(raw: str, url: str) -> None:
    assert parse_consul_address(raw) == url


def test_readme_config_reference_matches_the_schema() -> None:
    repo = Path(__file__).parents[2]
    readme = (repo / "README.md").read_text()
    assert config.reference_markdown() in readme, "regenerate the README table: scripts/update-readme-reference"
    checked = subprocess.run(["bash", str(repo / "scripts/update-readme-reference"), "--check"], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "PYTHON": sys.executable}, check=False)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize(("content", "holds"), [
    ("s3cret\nsecond-line\n", "more than one line"),
    ("s3cret\rtoken\n", "more than one line"),
    ("s3cr\x1bet\n", "a control character"),
    ("\n  \n", "nothing (it is empty)"),
    ("s3crét\n", "characters outside printable ASCII"),
])
def test_token_file_must_hold_one_token_on_one_line(tmp_path: Path, content: str, holds: str) -> None:
    token = tmp_path / "token"
    token.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, f'[consul]\ntoken_file = "{token}"\n'), env={})
    assert err.value.problems == (
        f"{tmp_path / 'config.toml'}: consul.token_file: {token} holds {holds}; "
        "a token file holds one token on one line",
    )
    assert "s3cr" not in str(err.value), "the token itself is never shown"


def test_check_refuses_a_token_file_with_an_inner_newline(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\nX-Injected: yes\n")
    proc = cli("check", "--config", str(write(tmp_path, f'[consul]\ntoken_file = "{token}"\n')))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"haproxy-sync: config: {tmp_path / 'config.toml'}: consul.token_file: {token} holds more than one "
        "line; a token file holds one token on one line"
    ]


@pytest.mark.parametrize("token", ["tök", "s3cret\nX-Injected: yes", "tab\there"])
def test_token_from_any_source_must_be_printable_ascii(tmp_path: Path, token: str) -> None:
    with pytest.raises(ConfigError, match=r"^environment CONSUL_HTTP_TOKEN: the token holds .*X-Consul-Token"):
        load_settings(write(tmp_path, ONE_SERVICE), env={"CONSUL_HTTP_TOKEN": token})


def test_host_names_cannot_be_confined_by_networks(tmp_path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[sync]\nnetworks = ["10.0.0.0/8"]\nhost_names = true\n[[services]]\nname = "web"\n')
    with pytest.raises(ConfigError, match="networks cannot confine them"):
        load_settings(path, env={})


@pytest.mark.parametrize("text", ["", " \n\t\n", "# only comments\n\n# here\n"])
def test_a_config_file_without_settings_is_an_error_never_the_defaults(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert str(caught.value).count("\n") == 0 and f"{path}: the config file holds no settings" in str(caught.value)
    result = subprocess.run([sys.executable, "-m", "haproxy_sync.cli", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "holds no settings" in result.stderr


@pytest.mark.parametrize(("line", "says"), [
    ("[sync]\nslots = 8.5", "sync.slots: expected an integer in 1-10000, got a float (8.5); write a whole number"),
    ("[sync]\nslots = 8.0", "sync.slots: expected an integer in 1-10000, got a float (8); write 8, without the "
                            "decimal point"),
    ('[sync]\nslots = "8"', "sync.slots: expected an integer in 1-10000, got a string ('8'); write 8, without quotes"),
    ("[sync]\nslots = true", "sync.slots: expected an integer in 1-10000, got a boolean (true)"),
    ("[haproxy]\nmaxconn = 1e4", "haproxy.maxconn: expected an integer in 1-1000000, got a float (10000)"),
    ("[consul]\nssl = 1", "consul.ssl: expected true or false, got an integer (1)"),
    ("[haproxy]\nconfig_mode = 0o640", "haproxy.config_mode: expected an octal file mode as a string, got an "
                                       "integer (416); write e.g. \"0640\""),
    ("[discovery]\nmax_drop = true", "discovery.max_drop: expected a percentage such as \"50%\", got a boolean"),
    ('[consul]\nwait = ["5m"]', "consul.wait: expected a duration such as \"250ms\" or \"1m30s\", got an array"),
    ('[[services]]\nname = "a"\nmin_servers = 1.5', "services[0].min_servers: expected an integer in 0-100000, "
                                                    "got a float (1.5)"),
    ('[[services]]\nname = "a"\ncanary_share = "100%"', "services[0].canary_share: '100%': a canary share is below "
                                                         "100%"),
    ('[[services]]\nname = "a"\nbackend = "a:canary"', "services: backend 'a:canary': a name ending in ':canary' is "
                                                        "kept for canary backends"),
    ('[haproxy]\ncanary_header = "X-Canary: always"', "haproxy.canary_header: HTTP header name 'X-Canary: always' "
                                                      "refused"),
    ('[haproxy]\ncanary_header_value = "a b"', "haproxy.canary_header_value: HTTP header value 'a b' refused"),
])
def test_wrong_types_are_errors_never_truncated_or_coerced(tmp_path: Path, line: str, says: str) -> None:
    """A float where an integer goes, a string where a number goes, a boolean for a number (or a number for
    a boolean) is one line naming the key and what to write: never int(8.5) == 8, never "8" taken as 8."""
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, line + "\n" + ("" if "services" in line else ONE_SERVICE)), env={})
    assert len(err.value.problems) == 1 and says in err.value.problems[0], err.value.problems


@pytest.mark.parametrize(("text", "says"), [
    ('[consul]\nadress = "x"', "consul.adress: unknown key; did you mean `address`?"),
    ('[consul]\ntoken_fle = "x"', "consul.token_fle: unknown key; did you mean `token_file`?"),
    ('[sync]\nwaitmax = "1s"', "sync.waitmax: unknown key; did you mean `wait_max`?"),
    ('[consl]\naddress = "x"', "[consl]: unknown section; did you mean `[consul]`?"),
    ('[[services]]\nname = "a"\nhealthpath = "/"', "services[0].healthpath: unknown key; did you mean `health_path`?"),
    ('[haproxy]\nzzz = 1', "haproxy.zzz: unknown key; known: binary, config_path,"),
])
def test_an_unknown_key_suggests_the_nearest_known_one(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text + "\n" + ("" if "services" in text else ONE_SERVICE)), env={})
    assert len(err.value.problems) == 1 and says in err.value.problems[0], err.value.problems


def test_consul_environment_names_as_consuls_own_cli(tmp_path: Path) -> None:
    """Every CONSUL_* name Consul's CLI reads sets its key here (api.go's defaultConfig)."""
    capath = tmp_path / "certs"
    capath.mkdir()
    env = {"CONSUL_HTTP_ADDR": "unix:///run/consul/http.sock", "CONSUL_HTTP_AUTH": "edge:pa:ss",
           "CONSUL_HTTP_SSL_VERIFY": "false", "CONSUL_CAPATH": str(capath), "CONSUL_NAMESPACE": "team-a",
           "CONSUL_PARTITION": "edge", "CONSUL_TLS_SERVER_NAME": "consul.test"}
    settings = load_settings(write(tmp_path, ONE_SERVICE), env=env)
    consul = settings.consul
    assert consul.address == "unix:///run/consul/http.sock"
    assert (consul.auth, consul.ssl_verify, consul.ca_path) == ("edge:pa:ss", False, str(capath))
    assert (consul.namespace, consul.partition, consul.tls_server_name) == ("team-a", "edge", "consul.test")
    assert "pa:ss" not in repr(settings), "basic auth is a secret, as the token"


@pytest.mark.parametrize(("env", "says"), [
    ({"CONSUL_NAMESPACE": "a b"}, "environment CONSUL_NAMESPACE: 'a b' is not a Consul namespace or partition name"),
    ({"CONSUL_PARTITION": "x&dc=other"}, "environment CONSUL_PARTITION: 'x&dc=other' is not a Consul"),
    ({"CONSUL_HTTP_AUTH": ":secret"}, "environment CONSUL_HTTP_AUTH: has an empty user name"),
    ({"CONSUL_HTTP_AUTH": "u:p\nX: y"}, "environment CONSUL_HTTP_AUTH: holds a control character"),
    ({"CONSUL_HTTP_SSL_VERIFY": "maybe"}, "environment CONSUL_HTTP_SSL_VERIFY: 'maybe' is not a boolean"),
    ({"CONSUL_CAPATH": "/nonexistent/certs"}, "environment CONSUL_CAPATH: /nonexistent/certs: no such directory"),
    ({"CONSUL_HTTP_ADDR": "unix://relative.sock"}, "environment CONSUL_HTTP_ADDR: 'unix://relative.sock' is not "
                                                   "unix:///absolute/path"),
])
def test_consul_environment_values_are_checked_and_named(tmp_path: Path, env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, ONE_SERVICE), env=env)
    assert len(err.value.problems) == 1 and says in err.value.problems[0], err.value.problems
    assert "secret" not in str(err.value)


def test_ssl_verify_off_is_a_warning_naming_the_variable(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ONE_SERVICE),
                             env={"CONSUL_HTTP_ADDR": "https://c:8501", "CONSUL_HTTP_SSL_VERIFY": "0"})
    assert any("environment CONSUL_HTTP_SSL_VERIFY: Consul's certificate is not verified" in w
               for w in settings.warnings), settings.warnings


def test_token_file_wins_over_token_at_the_same_level_as_in_consul(tmp_path: Path) -> None:
    """Consul's client: -token-file over -token, CONSUL_HTTP_TOKEN_FILE over CONSUL_HTTP_TOKEN; across
    levels the layers decide (the environment over the file)."""
    token = tmp_path / "token"
    token.write_text("from-token-file\n")
    token.chmod(0o600)
    both_env = {"CONSUL_HTTP_TOKEN": "from-env", "CONSUL_HTTP_TOKEN_FILE": str(token)}
    assert load_settings(write(tmp_path, ONE_SERVICE), env=both_env).consul.token == "from-token-file"
    both_file = write(tmp_path, f'[consul]\ntoken = "in-file"\ntoken_file = "{token}"\n')
    assert load_settings(both_file, env={}).consul.token == "from-token-file"
    assert load_settings(both_file, env={"CONSUL_HTTP_TOKEN": "from-env"}).consul.token == "from-env"
    token_in_file = write(tmp_path, '[consul]\ntoken = "in-file"\n')
    assert load_settings(token_in_file, env={"CONSUL_HTTP_TOKEN_FILE": str(token)}).consul.token == "from-token-file"


@pytest.mark.parametrize("raw", ["unix:///tmp/consul.sock", "unix:///var/run/consul/http.sock"])
def test_unix_socket_addresses(raw: str) -> None:
    assert parse_consul_address(raw) == raw
