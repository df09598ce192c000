"""Per-branch environments (issue 8): `ansible/branch.yml` passes `--syntax-check` against every
inventory and its checks refuse what they must before anything touches a host;
`nomad/cabify.nomad.hcl`, evaluated for a branch, gives the job, service, tags and host that
haproxy-sync routes by, while main keeps production's names; the Consul agents allow haproxy-sync
one blocking query per routed service.

python-hcl2 parses but does not evaluate, so `_Hcl` below evaluates the small part of HCL that the
job file's variables, locals and names use (references, templates, conditionals, comparisons,
`strlen`, `regex_replace`) over python-hcl2's own parse tree, and refuses anything else rather than
guess. Nomad itself is not here: docs/deployment.md, "Per-branch environments", has the commands that check
the file with a real `nomad job run -output`."""

from __future__ import annotations

import functools
import json
import re
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hcl2
import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import regex_replace as ansible_regex_replace
from hypothesis import given, settings
from hypothesis import strategies as st
from lark import Token, Tree

from .conftest import ANSIBLE_DIR, NOMAD_DIR, REPO, load_hcl, run, tail, tool

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

INVENTORIES = ["vagrant", "vagrant-cluster", "cluster.example"]
JOB_FILE = NOMAD_DIR / "cabify.nomad.hcl"
PLAYBOOK = ANSIBLE_DIR / "branch.yml"
CABIFY_TASKS = ANSIBLE_DIR / "roles" / "cabify" / "tasks"


# --- a small HCL evaluator over python-hcl2's parse tree ------------------------------------------

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        char = match.group(1)
        if char not in _ESCAPES:
            raise NotImplementedError(f"HCL escape \\{char}")
        return _ESCAPES[char]

    return re.sub(r"\\(.)", one, text)


def _trees(node: Tree) -> list[Tree]:
    """The child rules of node, without the comment/newline ones."""
    return [c for c in node.children if isinstance(c, Tree) and c.data != "new_line_or_comment"]


def _name(node: Tree) -> str:
    """The text of an identifier (or a keyword/literal used as a name)."""
    token = node.children[0]
    assert isinstance(token, Token), node
    return str(token)


def _traversal(node: Tree) -> list[str]:
    """a.b.c as ["a", "b", "c"]."""
    root, attr = _trees(node)
    inner = _trees(root)[0]
    head = _traversal(inner) if inner.data == "get_attr_expr_term" else [_name(inner)]
    return [*head, _name(_trees(attr)[0])]


def _go_regex_replace(value: str, pattern: str, replacement: str) -> str:
    # cty's regex_replace is Go's ReplaceAllString. RE2's `$` (no multi-line flag) matches only at
    # the very end, Python's also before a final newline: use \Z for it. Go expands `$1` in the
    # replacement; the job file replaces with "" only, so anything else is refused.
    if replacement:
        raise NotImplementedError("regex_replace with a non-empty replacement")
    pattern = re.sub(r"(?<!\\)\$$", r"\\Z", pattern)
    return re.sub(pattern, "", value)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "strlen": len,
    "regex_replace": _go_regex_replace,
}

_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    # HCL evaluates both operands of && and ||; so does this.
    "&&": lambda a, b: _bool(a) and _bool(b),
    "||": lambda a, b: _bool(a) or _bool(b),
}


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"a bool is required, not {value!r}")
    return value


def _text(value: Any) -> str:
    """HCL's conversion of a template interpolation to a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise TypeError(f"cannot interpolate {value!r}")


class _Hcl:
    """One HCL file: its blocks, and its expressions evaluated with given variable values."""

    def __init__(self, path: Path, values: dict[str, Any] | None = None) -> None:
        self.root = hcl2.parses_to_tree(path.read_text())
        body = _trees(self.root)[0]
        self.variables = {self.labels(b)[0]: b for b in self.blocks(body, "variable")}
        unknown = set(values or {}) - set(self.variables)
        assert not unknown, f"not variables of {path.name}: {unknown}"
        self.var: dict[str, Any] = {}
        for name, block in self.variables.items():
            if values and name in values:
                self.var[name] = values[name]
            else:
                self.var[name] = self.eval(self.attributes(block)["default"])
        self.locals: dict[str, Tree] = {}
        for block in self.blocks(body, "locals"):
            self.locals.update(self.attributes(block))
        self._local_values: dict[str, Any] = {}
        self.body = body

    # structure

    @staticmethod
    def attributes(node: Tree) -> dict[str, Tree]:
        """The attributes of a block (or body): name -> expression tree."""
        body = node if node.data == "body" else next(t for t in _trees(node) if t.data == "body")
        return {_name(_trees(a)[0]): _trees(a)[-1] for a in _trees(body) if a.data == "attribute"}

    @staticmethod
    def blocks(node: Tree, kind: str) -> list[Tree]:
        body = node if node.data == "body" else next(t for t in _trees(node) if t.data == "body")
        return [b for b in _trees(body) if b.data == "block" and _name(_trees(b)[0]) == kind]

    def labels(self, block: Tree) -> list[str]:
        found = []
        for child in _trees(block)[1:]:
            if child.data == "body":
                break
            found.append(self.eval(child) if child.data == "string" else _name(child))
        return found

    def block(self, node: Tree, kind: str, label: str | None = None) -> Tree:
        matches = [b for b in self.blocks(node, kind) if label is None or self.labels(b) == [label]]
        assert len(matches) == 1, f"{len(matches)} {kind} blocks labelled {label!r}"
        return matches[0]

    # evaluation

    def local(self, name: str) -> Any:
        if name not in self._local_values:
            if name not in self.locals:
                raise KeyError(f"local.{name} is not defined")
            self._local_values[name] = self.eval(self.locals[name])
        return self._local_values[name]

    def eval(self, node: Tree) -> Any:
        kind = node.data
        parts = _trees(node)
        if kind == "expr_term":
            assert len(parts) == 1, node
            return self.eval(parts[0])
        if kind == "conditional":
            condition, then, otherwise = parts
            return self.eval(then) if _bool(self.eval(condition)) else self.eval(otherwise)
        if kind == "binary_op":
            left, term = parts
            operator, right = _trees(term)
            return _OPERATORS[_name(operator)](self.eval(left), self.eval(right))
        if kind == "unary_op":
            operator = str(node.children[0])
            value = self.eval(parts[0])
            return (not _bool(value)) if operator == "!" else -value
        if kind == "int_lit":
            return int(str(node.children[0]))
        if kind == "float_lit":
            return float(str(node.children[0]))
        if kind == "literal_value":
            return {"true": True, "false": False, "null": None}[str(node.children[0])]
        if kind == "string":
            text = []
            for part in _trees(node):
                piece = part.children[0]
                if isinstance(piece, Token) and piece.type == "STRING_CHARS":
                    text.append(_unescape(str(piece)))
                elif isinstance(piece, Token) and piece.type == "ESCAPED_INTERPOLATION":
                    text.append(str(piece)[1:])
                elif isinstance(piece, Tree) and piece.data == "interpolation":
                    text.append(_text(self.eval(_trees(piece)[0])))
                else:
                    raise NotImplementedError(f"string part {piece!r}")
            return "".join(text)
        if kind == "tuple":
            return [self.eval(p) for p in parts]
        if kind == "function_call":
            name = _name(parts[0])
            args = [self.eval(a) for a in _trees(parts[1])] if len(parts) > 1 else []
            if name not in _FUNCTIONS:
                raise NotImplementedError(f"function {name}()")
            return _FUNCTIONS[name](*args)
        if kind == "get_attr_expr_term":
            path = _traversal(node)
            if len(path) == 2 and path[0] == "var":
                return self.var[path[1]]
            if len(path) == 2 and path[0] == "local":
                return self.local(path[1])
            raise NotImplementedError(f"{'.'.join(path)} (a Nomad runtime value)")
        raise NotImplementedError(f"HCL rule {kind}")

    def valid(self, variable: str, value: Any) -> bool:
        """Whether every validation block of the variable accepts value, as Nomad checks them."""
        checks = self.blocks(self.variables[variable], "validation")
        assert checks, f"variable {variable} has no validation block"
        probe = _Hcl.__new__(_Hcl)
        probe.var, probe.locals, probe._local_values = {variable: value}, {}, {}
        return all(_bool(probe.eval(self.attributes(c)["condition"])) for c in checks)


@functools.cache
def _job_file() -> _Hcl:
    """The job file with its defaults, parsed once (for its variables and validations)."""
    return _Hcl(JOB_FILE)


def _job(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """What Nomad would register for the job file with these -var values: the names that matter."""
    hcl = _Hcl(JOB_FILE, values)
    job = hcl.block(hcl.body, "job", "cabify")
    group = hcl.block(job, "group", "cabify")
    service = hcl.block(group, "service")
    task = hcl.block(group, "task", "cabify")
    job_attrs = hcl.attributes(job)
    service_attrs = hcl.attributes(service)
    check = hcl.attributes(hcl.block(service, "check"))
    return {
        "id": hcl.eval(job_attrs["id"]),
        "name": hcl.eval(job_attrs["name"]),
        "count": hcl.eval(hcl.attributes(group)["count"]),
        "service": hcl.eval(service_attrs["name"]),
        "tags": hcl.eval(service_attrs["tags"]),
        "canary_tags": hcl.eval(service_attrs["canary_tags"]),
        "auto_promote": hcl.eval(hcl.attributes(hcl.block(job, "update"))["auto_promote"]),
        "meta": {k: hcl.eval(v) for k, v in hcl.attributes(hcl.block(service, "meta")).items()},
        "check_path": hcl.eval(check["path"]),
        "image": hcl.eval(hcl.attributes(hcl.block(task, "config"))["image"]),
        "env": {k: hcl.eval(v) for k, v in hcl.attributes(hcl.block(task, "env")).items()},
    }


def test_evaluator_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    path = tmp_path / "x.hcl"
    path.write_text('variable "a" {\n  default = "x"\n}\nlocals {\n  b = upper(var.a)\n  c = node.unique.id\n}\n')
    hcl = _Hcl(path)
    with pytest.raises(NotImplementedError, match="upper"):
        hcl.local("b")
    with pytest.raises(NotImplementedError, match="runtime"):
        hcl.local("c")
    assert _Hcl(path, {"a": "y"}).var == {"a": "y"}


# --- the Nomad job file --------------------------------------------------------------------------


def test_job_file_declares_branch_and_domain() -> None:
    variables = {name: body for block in load_hcl(JOB_FILE)["variable"] for name, body in block.items()}
    assert variables["branch"]["type"] == "string" and variables["branch"]["default"] == "main"
    assert variables["domain"]["type"] == "string" and variables["domain"]["default"] == "cabify.internal"
    assert variables["branch"]["validation"] and variables["domain"]["validation"]
    locals_ = {k: v for block in load_hcl(JOB_FILE)["locals"] for k, v in block.items()}
    assert {"production", "name", "host", "tags"} <= set(locals_)


def test_main_keeps_the_production_names() -> None:
    job = _job()
    assert (job["id"], job["name"], job["service"]) == ("cabify", "cabify", "cabify")
    # Routed by the service in haproxy-sync's own config: no discovery tag, so it is not routed twice.
    assert job["tags"] == ["http"]
    assert job["count"] == 7
    assert job["image"] == "127.0.0.1:5000/cabify:1.0.0"
    assert job["meta"]["haproxy-sync-host"] == "cabify.internal"
    assert _job({"branch": "main", "count": 7}) == job


@pytest.mark.parametrize("branch", ["feature-x", "a", "x" * 40, "42-fix-login"])
def test_a_branch_gets_its_own_job_service_tag_and_host(branch: str) -> None:
    job = _job({"branch": branch, "version": f"{branch}-0a1b2c3d4e5f", "count": 1})
    name = f"cabify-{branch}"
    assert (job["id"], job["name"], job["service"]) == (name, name, name)
    assert job["tags"] == ["http", "haproxy-sync"]
    assert job["meta"]["haproxy-sync-host"] == f"{branch}.cabify.internal"
    assert job["meta"]["haproxy-sync-health-path"] == job["check_path"] == "/health"
    assert job["meta"]["branch"] == branch
    assert job["env"]["CABIFY_VERSION"] == f"{branch}-0a1b2c3d4e5f", "the app answers with its branch's version"
    assert job["image"] == f"127.0.0.1:5000/cabify:{branch}-0a1b2c3d4e5f"
    assert job["count"] == 1


def test_domain_and_routing_tag_come_from_variables() -> None:
    job = _job({"branch": "feature-x", "domain": "apps.example.org", "routing_tag": "edge"})
    assert job["meta"]["haproxy-sync-host"] == "feature-x.apps.example.org"
    assert job["tags"] == ["http", "edge"]
    assert _job({"domain": "apps.example.org"})["meta"]["haproxy-sync-host"] == "apps.example.org"


@pytest.mark.parametrize("branch", ["main", "feature-x"])
def test_a_canary_keeps_its_routing_tags_and_asks_for_its_share(branch: str) -> None:
    job = _job({"branch": branch})
    assert job["canary_tags"] == [*job["tags"], "canary"], "discovery must still find a canary"
    assert (job["meta"]["haproxy-sync-canary-tag"], job["meta"]["haproxy-sync-canary-share"]) == ("canary", "10%")
    assert job["auto_promote"] is True
    held = _job({"branch": branch, "canary_tag": "next", "canary_share": "1%", "auto_promote": False})
    assert held["canary_tags"] == [*job["tags"], "next"] and held["meta"]["haproxy-sync-canary-tag"] == "next"
    assert held["auto_promote"] is False, "held at its share until `nomad deployment promote`"


def test_the_edge_gives_the_production_canary_the_share_the_job_asks_for(role_render: dict[str, Any]) -> None:
    values = _nomad_values(role_render["cabify"]["main"]["vars"])
    services = tomllib.loads(role_render["config"])["services"]
    assert (services[0]["canary_tag"], services[0]["canary_share"]) == (values["canary_tag"], values["canary_share"])


BRANCHES = {
    "main": True, "feature-x": True, "a": True, "0": True, "x" * 40: True, "1-2-3": True,
    "": False, "x" * 41: False, "Feature": False, "feature_x": False, "feature.x": False,
    "-x": False, "x-": False, "-": False, "feature/x": False, "feature-x\n": False, "féature": False,
}


@pytest.mark.parametrize(("branch", "valid"), BRANCHES.items(), ids=[repr(b) for b in BRANCHES])
def test_nomad_refuses_a_branch_that_is_not_a_dns_label(branch: str, valid: bool) -> None:
    assert _job_file().valid("branch", branch) is valid


@pytest.mark.parametrize(
    ("domain", "valid"),
    [("cabify.internal", True), ("apps.example.org", True), ("a", True), ("", False),
     ("Cabify.internal", False), (".internal", False), ("cabify.", False), ("a..b", False), ("a_b.c", False)],
)
def test_nomad_refuses_a_domain_that_is_not_a_dns_name(domain: str, valid: bool) -> None:
    assert _job_file().valid("domain", domain) is valid


# --- the playbook --------------------------------------------------------------------------------


@functools.cache
def _playbook_checks() -> tuple[str, ...]:
    """The expressions of branch.yml's first assert, the one that checks branch and state."""
    play = yaml.safe_load(PLAYBOOK.read_text())[0]
    task = play["tasks"][0]
    assert "branch" in task["name"].lower()
    return tuple(task["ansible.builtin.assert"]["that"])


def _ansible_accepts(branch: str, state: str = "present") -> bool:
    """Evaluates the assert's expressions as Ansible does: Jinja2 with Ansible's regex_replace."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["regex_replace"] = ansible_regex_replace
    return all(bool(env.compile_expression(expr)(branch=branch, state=state)) for expr in _playbook_checks())


@pytest.mark.parametrize(("branch", "valid"), BRANCHES.items(), ids=[repr(b) for b in BRANCHES])
def test_playbook_checks_the_branch_as_nomad_does(branch: str, valid: bool) -> None:
    assert _ansible_accepts(branch) is valid


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abz09-_.A\n/", max_size=44))
def test_playbook_and_nomad_accept_the_same_names(branch: str) -> None:
    assert _ansible_accepts(branch) is _job_file().valid("branch", branch)


def test_playbook_checks_the_state() -> None:
    assert _ansible_accepts("feature-x", "absent")
    assert not _ansible_accepts("feature-x", "gone")


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_branch_yml_syntax(inventory: str, ansible_env: dict[str, str]) -> None:
    proc = run(
        [tool("ansible-playbook"), "--syntax-check", "-i", f"inventories/{inventory}", "branch.yml"],
        timeout=120,
        cwd=ANSIBLE_DIR,
        env=ansible_env,
    )
    assert proc.returncode == 0, tail(proc)


@pytest.fixture(scope="module")
def unreachable_inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An inventory whose build host can never be reached: its "ssh" exits 255 (ssh's own code for
    a connection error) without touching the network. A check that wrongly lets a run through
    ends UNREACHABLE at the first task that needs the host, never doing anything anywhere."""
    root = tmp_path_factory.mktemp("branch-inventory")
    fake_ssh = root / "no-ssh"
    fake_ssh.write_text("#!/bin/sh\nexit 255\n")
    fake_ssh.chmod(0o755)
    (root / "hosts.yml").write_text(textwrap.dedent(f"""\
        all:
          children:
            nomad_clients:
              hosts:
                build-host:
                  ansible_host: 192.0.2.1
                  ansible_connection: ssh
                  ansible_ssh_executable: {fake_ssh}
                  ansible_ssh_retries: 0
        """))
    return root / "hosts.yml"


REFUSED = {
    "no-branch": ([], "Pass -e branch=NAME"),
    "not-a-label": (["-e", "branch=Feature_X"], "lowercase DNS label"),
    "bad-state": (["-e", "branch=feature-x", "-e", "state=gone"], "lowercase DNS label"),
    "production": (["-e", "branch=main", "-e", "state=absent"], "branch=main state=absent would stop production"),
    # The cabify role's stop.yml refuses on its own too, should a caller forget the check.
    "production-in-the-role": (["-e", "branch=main", "-e", "state=absent", "-e", "force=true",
                                "-e", "cabify_stop_production=false"], "cabify_branch is main: this would stop"),
    "bad-revision": (["-e", "branch=feature-x", "-e", "branch_revision=a/b"], "branch_revision must be"),
}


@pytest.mark.parametrize(("args", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_branch_yml_refuses_before_touching_the_host(
    args: list[str], message: str, unreachable_inventory: Path, ansible_env: dict[str, str]
) -> None:
    proc = run([tool("ansible-playbook"), "-i", str(unreachable_inventory), "branch.yml", *args],
               timeout=120, cwd=ANSIBLE_DIR, env=ansible_env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, tail(proc)
    assert message in output, tail(proc)
    assert "UNREACHABLE" not in output, tail(proc)


ACCEPTED = {
    "deploy": (["-e", "branch=feature-x", "-e", "branch_revision=0a1b2c3d4e5f"],
               "cabify : Create the cabify build directory."),
    "teardown": (["-e", "branch=feature-x", "-e", "state=absent"], "cabify : Look up the cabify job of the branch."),
    "forced-production-teardown": (["-e", "branch=main", "-e", "state=absent", "-e", "force=true"],
                                   "cabify : Look up the cabify job of the branch."),
}


@pytest.mark.parametrize(("args", "first_remote_task"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_branch_yml_goes_on_to_the_host_when_the_checks_pass(
    args: list[str], first_remote_task: str, unreachable_inventory: Path, ansible_env: dict[str, str]
) -> None:
    proc = run([tool("ansible-playbook"), "-i", str(unreachable_inventory), "branch.yml", *args],
               timeout=120, cwd=ANSIBLE_DIR, env=ansible_env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 4, tail(proc)  # 4: a host was unreachable
    tasks = re.findall(r"^TASK \[(.*)\]", output, re.M)
    assert tasks and tasks[-1] == first_remote_task, tail(proc)
    assert re.search(r"^fatal: \[build-host\]: UNREACHABLE!", output, re.M), tail(proc)


def test_branch_revision_defaults_to_the_checkout_head(
    unreachable_inventory: Path, ansible_env: dict[str, str]
) -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: branch.yml needs -e branch_revision=... here")
    proc = run([tool("ansible-playbook"), "-i", str(unreachable_inventory), "branch.yml", "-e", "branch=feature-x"],
               timeout=120, cwd=ANSIBLE_DIR, env=ansible_env)
    assert proc.returncode == 4, tail(proc)
    assert "TASK [cabify : Create the cabify build directory.]" in proc.stdout, tail(proc)


# --- the cabify role and the Consul role, rendered -----------------------------------------------


def _role_job_vars() -> list[str]:
    """The -var arguments the cabify role passes to nomad (tasks/deploy.yml, the plan task)."""
    tasks = yaml.safe_load((CABIFY_TASKS / "deploy.yml").read_text())
    plan = next(t for t in tasks if t["name"] == "Plan the cabify job.")
    return list(plan["vars"]["cabify_job_vars"])


@pytest.fixture(scope="module")
def role_render(tmp_path_factory: pytest.TempPathFactory, ansible_env: dict[str, str]) -> dict[str, Any]:
    """The cabify role's job ID and nomad -var arguments, and the Consul role's consul.hcl, rendered
    by Ansible from the roles' defaults (no host: the roles' tasks are skipped)."""
    out = tmp_path_factory.mktemp("branch-render")
    playbook = out / "render.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Render what the cabify and consul roles would run with.",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "roles": [{"role": "cabify", "when": False}, {"role": "consul", "when": False},
                  {"role": "haproxy_sync", "when": False}],
        "vars": {"private_ip": "10.0.0.1", "job_vars": _role_job_vars(),
                 "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "tasks": [
            {"name": "Write the cabify job ID and -var arguments of each branch.",
             "ansible.builtin.copy": {
                 "dest": f"{out}/cabify-{{{{ item }}}}.json",
                 "content": "{{ {'job_id': cabify_job_id, 'vars': job_vars} | to_json }}",
                 "mode": "0644"},
             "vars": {"cabify_branch": "{{ item }}"},
             "loop": ["main", "feature-x"]},
            {"name": "Render consul.hcl with the role's defaults.",
             "ansible.builtin.template": {
                 "src": str(ANSIBLE_DIR / "roles/consul/templates/consul.hcl.j2"),
                 "dest": f"{out}/consul.hcl", "mode": "0644"}},
            {"name": "Render consul.hcl with a connection limit of its own.",
             "ansible.builtin.template": {
                 "src": str(ANSIBLE_DIR / "roles/consul/templates/consul.hcl.j2"),
                 "dest": f"{out}/consul-8192.hcl", "mode": "0644"},
             "vars": {"consul_http_max_conns_per_client": 8192}},
            {"name": "Render haproxy-sync's config.toml with the role's defaults.",
             "ansible.builtin.template": {
                 "src": str(ANSIBLE_DIR / "roles/haproxy_sync/templates/config.toml.j2"),
                 "dest": f"{out}/config.toml", "mode": "0644"}},
        ],
    }]))
    proc = run([tool("ansible-playbook"), "-i", "localhost,", str(playbook)], timeout=120, cwd=out, env=ansible_env)
    assert proc.returncode == 0, tail(proc)
    return {
        "cabify": {b: json.loads((out / f"cabify-{b}.json").read_text()) for b in ("main", "feature-x")},
        "consul": load_hcl(out / "consul.hcl"),
        "consul-8192": load_hcl(out / "consul-8192.hcl"),
        "config": (out / "config.toml").read_text(),
    }


def _nomad_values(arguments: list[str]) -> dict[str, Any]:
    """-var=NAME=VALUE arguments as Nomad reads them for this file's variable types."""
    values: dict[str, Any] = {}
    for argument in arguments:
        name, _, value = argument.removeprefix("-var=").partition("=")
        values[name] = {"count": int, "datacenters": json.loads, "auto_promote": json.loads}.get(name, str)(value)
    return values


@pytest.mark.parametrize("branch", ["main", "feature-x"])
def test_role_passes_every_job_variable_and_names_the_job_as_nomad(
    branch: str, role_render: dict[str, Any]
) -> None:
    rendered = role_render["cabify"][branch]
    values = _nomad_values(rendered["vars"])
    assert set(values) == set(_job_file().variables), "the role sets every variable of the job file"
    job = _job(values)
    assert job["id"] == rendered["job_id"], "deploy waits on, and stop.yml deletes, the job Nomad registers"
    assert job["count"] == (7 if branch == "main" else 1)


def test_consul_lets_haproxy_sync_hold_a_blocking_query_per_service(role_render: dict[str, Any]) -> None:
    assert role_render["consul"]["limits"][0]["http_max_conns_per_client"] == 4096
    assert role_render["consul-8192"]["limits"][0]["http_max_conns_per_client"] == 8192
