# Sourced by scripts/sandbox and scripts/test: everything a fresh Debian/Ubuntu machine needs,
# done once and skipped when already done. Not meant to be run on its own.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HAPROXY_SYNC_VENV:-$ROOT/.venv}"
APT_UPDATED=0

say() { printf 'bootstrap: %s\n' "$*" >&2; }

apt_install() {
  # Installs Debian packages when we are root; otherwise names the command to run and stops.
  if [ "$(id -u)" -ne 0 ]; then
    say "missing: $*; run 'sudo apt-get update && sudo apt-get install -y $*' and try again"
    exit 1
  fi
  if [ "$APT_UPDATED" -eq 0 ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  say "apt-get install -y $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_haproxy() {
  if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
    apt_install haproxy
  fi
  # The Debian package starts a system-wide HAProxy on :80 where systemd runs; we never need it.
  export PATH="$PATH:/usr/sbin"
}

ensure_vagrant() {
  # `vagrant validate` checks the Vagrantfile (tests/deploy/test_vagrant.py). Installed from apt where we
  # are root; elsewhere that test is skipped with the command to run.
  if ! command -v vagrant >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    apt_install vagrant || say "could not install vagrant; tests/deploy/test_vagrant.py will be skipped"
  fi
}

ensure_venv() {
  # $1: the extras to install, e.g. "test" or "test,deploy".
  local extras="$1"
  if [ ! -x "$VENV/bin/python" ]; then
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
      rm -rf "$VENV"
      apt_install python3-venv
      python3 -m venv "$VENV"
    fi
  fi
  local stamp="$VENV/.haproxy-sync-installed"
  local want
  want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1) $extras"
  if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
    say "installing haproxy-sync[$extras] into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[$extras]"
    printf '%s\n' "$want" >"$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}
