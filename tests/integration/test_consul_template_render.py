"""consul-template, the real one (the version bench/ pins, built with go install), renders its template
functions against devconsul (issue #15, point 6): ``service``, ``services``, ``node`` and ``key``.

Each function is rendered by its own ``consul-template -once`` run, so that one that cannot render (it
waits, or fails after its retries) does not hide the others. Every function must render exactly the
expected text except those in KNOWN_NOT_RENDERING, and each of those must still fail to render, so a
fixed one leaves the list. Skipped only when consul-template cannot be installed (no Go, no network).
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bench.common.syncers import find_consul_template
from haproxy_sync.dev.devconsul import DevConsulThread

pytestmark = pytest.mark.timeout(900)  # the first go install of consul-template takes about a minute

RENDER_TIMEOUT = 10.0

# function -> (template, the text it must render against the catalog registered below)
TEMPLATES: dict[str, tuple[str, str]] = {
    # health/service/web?passing, instances sorted by node then ID; .Address falls back to the node's
    "service": (
        '{{ range service "web" }}{{ .ID }} {{ .Address }}:{{ .Port }} [{{ join "," .Tags }}] '
        '{{ index .ServiceMeta "version" }}\n{{ end }}',
        "web-1 10.0.0.1:8080 [a,b] 1.0\nweb-2 10.0.0.2:8081 [b] 1.1\nweb-3 127.0.0.1:8082 [] \n",
    ),
    # catalog/services, sorted by name, tags sorted and each once
    "services": (
        '{{ range services }}{{ .Name }} [{{ join "," .Tags }}]\n{{ end }}',
        "consul []\ndb [primary]\nweb [a,b]\n",
    ),
    # catalog/node/<the agent's node name>: the node and its services
    "node": (
        '{{ with node }}{{ .Node.Node }} {{ .Node.Address }}:{{ range .Services }} {{ .ID }}{{ end }}{{ end }}\n',
        "devconsul 127.0.0.1: consul db-1 web-1 web-2 web-3\n",
    ),
    # kv/gc/greeting
    "key": ('{{ key "gc/greeting" }}\n', "hello\n"),
}

# function -> why it does not render against devconsul today, and what covers it (empty since #15 point 5,
# which gave devconsul /v1/catalog/node/<name> and the KV store)
KNOWN_NOT_RENDERING: dict[str, str] = {}


def _put(url: str, body: Any) -> int:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _populate(consul: DevConsulThread) -> None:
    registrations = [
        {"ID": "web-1", "Name": "web", "Address": "10.0.0.1", "Port": 8080, "Tags": ["a", "b"],
         "Meta": {"version": "1.0"}},
        {"ID": "web-2", "Name": "web", "Address": "10.0.0.2", "Port": 8081, "Tags": ["b"], "Meta": {"version": "1.1"}},
        {"ID": "web-3", "Name": "web", "Port": 8082},
        {"ID": "db-1", "Name": "db", "Port": 5432, "Tags": ["primary"]},
    ]
    for registration in registrations:
        assert _put(f"{consul.url}/v1/agent/service/register", registration) == 200, registration
    assert _put(f"{consul.url}/v1/kv/gc/greeting", b"hello") == 200


def _render(binary: Path, consul: DevConsulThread, tmp_path: Path, function: str, template: str) -> tuple[bool, str]:
    """Render one template once; (rendered, the output or why not)."""
    source, output = tmp_path / f"{function}.tpl", tmp_path / f"{function}.out"
    source.write_text(template)
    config = tmp_path / f"{function}.hcl"
    config.write_text(
        'consul {\n'
        f'  address = "{consul.address}"\n'
        '  retry {\n    enabled = true\n    attempts = 2\n    backoff = "100ms"\n    max_backoff = "200ms"\n  }\n'
        '}\n'
    )
    try:
        result = subprocess.run(
            [str(binary), "-once", "-config", str(config), "-log-level", "warn", "-template", f"{source}:{output}"],
            capture_output=True, text=True, timeout=RENDER_TIMEOUT, check=False, stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        )
    except subprocess.TimeoutExpired:
        return False, f"did not render within {RENDER_TIMEOUT:.0f} s (waiting for data)"
    if result.returncode != 0:
        return False, f"exit {result.returncode}: {result.stderr.strip()[-400:]}"
    return True, output.read_text() if output.exists() else ""


def test_consul_template_renders_its_functions(tmp_path: Path) -> None:
    binary, reason = find_consul_template(None, install=True)
    if binary is None:
        pytest.skip(f"consul-template cannot be installed: {reason}")
    with DevConsulThread(port=0) as consul:
        _populate(consul)
        outcomes = {function: _render(binary, consul, tmp_path, function, template)
                    for function, (template, _) in TEMPLATES.items()}

    matching = [function for function, (rendered, text) in outcomes.items()
                if rendered and text == TEMPLATES[function][1]]
    print(f"\n{len(matching)} of {len(TEMPLATES)} consul-template functions render against devconsul: "
          f"{', '.join(matching) or 'none'}")
    wrong = {function: text for function, (rendered, text) in outcomes.items()
             if function not in matching and function not in KNOWN_NOT_RENDERING}
    for function, (_, text) in outcomes.items():
        if function not in matching:
            print(f"  {function}: {text!r}, want {TEMPLATES[function][1]!r}")
    assert not wrong, f"consul-template renders these otherwise than Consul would: {wrong}"
    fixed = sorted(function for function in KNOWN_NOT_RENDERING if function in matching)
    assert not fixed, f"these render now: remove them from KNOWN_NOT_RENDERING: {fixed}"
