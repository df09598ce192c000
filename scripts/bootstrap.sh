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

ensure_debootstrap() {
  # debootstrap builds the Debian 12 root of the host-in-a-box tests (tests/host, docs/host-box.md) once,
  # cached in .cache/hostbox/. Installed from apt where we are root; elsewhere those tests are skipped.
  if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ] && [ "$(id -u)" -eq 0 ]; then
    apt_install debootstrap || say "could not install debootstrap; tests/host will be skipped"
  fi
}

ensure_wrk() {
  # wrk drives HTTPS keep-alive load through certificate rotations (tests/integration/test_https.py).
  if ! command -v wrk >/dev/null 2>&1; then
    apt_install wrk
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
  want="$(cat "$ROOT/pyproject.toml" "$ROOT/requirements.lock" | sha256sum | cut -d' ' -f1) $extras"
  if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
    say "installing haproxy-sync[$extras] into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip >/dev/null
    # The runtime dependencies at the versions a release ships (requirements.lock); test tools float.
    "$VENV/bin/pip" install -q --disable-pip-version-check -c "$ROOT/requirements.lock" -e "$ROOT[$extras]"
    printf '%s\n' "$want" >"$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}

# HAProxy 3.0 LTS for the tests, built from Debian 13 (trixie)'s source package and cached by version.
HAPROXY_30_VERSION=3.0.11
HAPROXY_30_DEB_VERSION=3.0.11-1+deb13u4
HAPROXY_30_SHA256=a133e2d550c5fd9a849b5c7ab17bb945bcdad209ca140d41f45ebf31943ae783
HAPROXY_30_CACHE="$ROOT/.cache/haproxy/$HAPROXY_30_VERSION"
HAPROXY_30_SOURCES=/etc/apt/sources.list.d/haproxy-sync-trixie-src.list

haproxy30_ok() {
  # True when $1 runs and says "HAProxy version 3.0.11" (the cache check).
  local version
  [ -x "$1" ] || return 1
  version="$("$1" -v 2>/dev/null || true)"
  [[ "$version" =~ ^"HAProxy version $HAPROXY_30_VERSION"[[:space:]-] ]]
}

debian_mirror() {
  # The Debian archive this machine already uses (one-line .list or deb822 .sources), so that the trixie
  # deb-src line names the same mirror; deb.debian.org when there is none.
  local uri
  uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | sed -nE 's#^(URIs:[[:space:]]*|deb(-src)?[[:space:]]+(\[[^]]*\][[:space:]]+)?)(https?://[^[:space:]]+/debian)/?([[:space:]].*)?$#\4#p' \
    | head -n1 || true)"
  printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

ensure_haproxy30() {
  local bin="$HAPROXY_30_CACHE/haproxy"
  if ! haproxy30_ok "$bin"; then
    if [ "$(id -u)" -ne 0 ]; then
      say "HAProxy $HAPROXY_30_VERSION is not built; tests against it are skipped. To build it (once, as root):"
      say "  sudo bash -c 'source $ROOT/scripts/bootstrap.sh && ensure_haproxy30'"
      return 0
    fi
    build_haproxy30 "$bin"
  fi
  export HAPROXY_30="$bin"
  say "HAProxy $HAPROXY_30_VERSION: $HAPROXY_30"
}

build_haproxy30() (
  # A subshell, so that the EXIT trap removing the temp dir stays here.
  local bin="$1" line mirror tmp version_line missing="" package tarball="haproxy_$HAPROXY_30_VERSION.orig.tar.gz"
  local started=$SECONDS
  mirror="$(debian_mirror)"
  line="deb-src $mirror trixie main"
  if [ ! -f "$HAPROXY_30_SOURCES" ] || [ "$(cat "$HAPROXY_30_SOURCES")" != "$line" ]; then
    say "adding '$line' to $HAPROXY_30_SOURCES"
    printf '%s\n' "$line" >"$HAPROXY_30_SOURCES"
  fi
  say "apt-get update"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  APT_UPDATED=1
  for package in build-essential libssl-dev libpcre2-dev; do
    if [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)" != "install ok installed" ]; then
      missing="$missing $package"
    fi
  done
  if [ -n "$missing" ]; then
    # shellcheck disable=SC2086  # one word per package
    apt_install $missing
  fi

  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  cd "$tmp"
  say "downloading the source of haproxy $HAPROXY_30_DEB_VERSION (Debian 13)"
  # The mirror may lack the .dsc and the Debian tarball: apt-get then fails, yet the upstream orig
  # tarball (all we build from) is fetched; when it is not, fetch just that file by its URI.
  if ! apt-get source --download-only -qq "haproxy=$HAPROXY_30_DEB_VERSION" >apt-source.log 2>&1; then
    [ -f "$tarball" ] || {
      local uri
      uri="$(apt-get source --print-uris -qq "haproxy=$HAPROXY_30_DEB_VERSION" 2>/dev/null \
        | awk -v f="$tarball" '$2 == f { gsub("\047", "", $1); print $1 }' || true)"
      if [ -z "$uri" ]; then
        cat apt-source.log >&2
        say "no source for haproxy=$HAPROXY_30_DEB_VERSION in $mirror trixie; cannot build HAProxy $HAPROXY_30_VERSION"
        exit 1
      fi
      say "apt-get source failed; fetching $uri alone"
      /usr/lib/apt/apt-helper download-file "$uri" "$tmp/$tarball" >>apt-source.log 2>&1 || true
    }
  fi
  if [ ! -f "$tarball" ]; then
    cat apt-source.log >&2
    say "$tarball was not downloaded; cannot build HAProxy $HAPROXY_30_VERSION"
    exit 1
  fi
  local actual
  actual="$(sha256sum "$tarball" | cut -d' ' -f1)"
  if [ "$actual" != "$HAPROXY_30_SHA256" ]; then
    say "REFUSING to build: $tarball has sha256 $actual, expected $HAPROXY_30_SHA256"
    exit 1
  fi
  say "sha256 of $tarball verified"

  tar -xzf "$tarball"
  say "building HAProxy $HAPROXY_30_VERSION (make -j2, about a minute on 2 cores)"
  if ! make -C "haproxy-$HAPROXY_30_VERSION" -j2 TARGET=linux-glibc USE_OPENSSL=1 USE_PCRE2=1 USE_PCRE2_JIT=1 \
      USE_PROMEX=1 >build.log 2>&1; then
    tail -n 40 build.log >&2
    say "building HAProxy $HAPROXY_30_VERSION failed"
    exit 1
  fi
  mkdir -p "$HAPROXY_30_CACHE"
  cp "haproxy-$HAPROXY_30_VERSION/haproxy" "$bin.partial"
  mv -f "$bin.partial" "$bin"
  if ! haproxy30_ok "$bin"; then
    version_line="$("$bin" -v 2>&1 | head -n1 || true)"
    rm -f "$bin"
    say "the built binary says '$version_line', not HAProxy version $HAPROXY_30_VERSION"
    exit 1
  fi
  say "built $bin in $((SECONDS - started))s"
)

# The Go program that drives devconsul with Consul's official Go client (tests/goclient, run by
# tests/integration/test_go_client.py), built into .cache/goclient/ and again only when its sources are
# newer than the binary. `go build` verifies go.sum and fetches github.com/hashicorp/consul/api through
# the module proxy the first time (about a minute on 2 cores, cold; a rebuild with warm caches is instant).
GOCLIENT_SOURCE="$ROOT/tests/goclient"
GOCLIENT_BIN="$ROOT/.cache/goclient/goclient"

ensure_goclient() {
  local go stale
  go="$(command -v go || true)"
  if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then
    go=/usr/local/go/bin/go
  fi
  stale="$(find "$GOCLIENT_SOURCE" -maxdepth 1 -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) \
    -newer "$GOCLIENT_BIN" -print -quit 2>/dev/null || echo missing)"
  if [ -x "$GOCLIENT_BIN" ] && [ -z "$stale" ]; then
    export HAPROXY_SYNC_GOCLIENT="$GOCLIENT_BIN"
    return 0
  fi
  if [ -z "$go" ]; then
    say "Go is not installed; tests/integration/test_go_client.py will be skipped (install Go 1.26 or later to run it)"
    return 0
  fi
  local started=$SECONDS
  say "building tests/goclient with $("$go" env GOVERSION) into $GOCLIENT_BIN"
  mkdir -p "$(dirname "$GOCLIENT_BIN")"
  if ! (cd "$GOCLIENT_SOURCE" && "$go" build -buildvcs=false -trimpath -o "$GOCLIENT_BIN.partial" .); then
    rm -f "$GOCLIENT_BIN.partial"
    say "building tests/goclient failed; tests/integration/test_go_client.py will try again and fail with the error"
    return 0
  fi
  mv -f "$GOCLIENT_BIN.partial" "$GOCLIENT_BIN"
  export HAPROXY_SYNC_GOCLIENT="$GOCLIENT_BIN"
  say "built $GOCLIENT_BIN in $((SECONDS - started))s"
}

# promtool for the alert-rule and exposition tests (tests/deploy/test_alerts.py): Debian's `prometheus`
# package holds it, but installing that package starts a Prometheus server we never want, so the .deb is
# only downloaded (no root needed once the apt lists exist) and usr/bin/promtool alone is extracted into
# .cache/promtool/<version>/, kept until the package's version moves. The monitoring role installs the
# same package on the Prometheus host, so the rules are checked by the promtool that will load them.
PROMTOOL_CACHE="$ROOT/.cache/promtool"

promtool_candidate() {
  # The version apt would install (empty when apt knows no prometheus package).
  # awk reads to the end: an early exit would kill apt-cache with SIGPIPE, a failure under pipefail.
  apt-cache policy prometheus 2>/dev/null | awk '!found && $1 == "Candidate:" && $2 != "(none)" { print $2; found = 1 }'
}

ensure_promtool() {
  local version bin cached
  version="$(promtool_candidate)"
  if [ -z "$version" ] && [ "$(id -u)" -eq 0 ] && [ "$APT_UPDATED" -eq 0 ]; then
    say "apt-get update (to find Debian's prometheus package)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
    version="$(promtool_candidate)"
  fi
  if [ -z "$version" ]; then
    # No apt lists to ask (not root, never updated): any promtool cached before still does the job.
    cached="$(find "$PROMTOOL_CACHE" -mindepth 2 -maxdepth 2 -name promtool -type f -executable 2>/dev/null \
      | sort | tail -n1 || true)"
    if [ -n "$cached" ]; then
      export HAPROXY_SYNC_PROMTOOL="$cached"
      say "promtool: $cached (apt names no prometheus package to compare it with)"
      return 0
    fi
    say "apt knows no prometheus package; the promtool tests are skipped (run 'sudo apt-get update' and try again)"
    return 0
  fi
  # The Debian version has + and ~ in it, both fine in a path; ':' (an epoch) is not kept.
  bin="$PROMTOOL_CACHE/${version//:/_}/promtool"
  if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
    export HAPROXY_SYNC_PROMTOOL="$bin"
    return 0
  fi
  fetch_promtool "$version" "$bin" || return 0
  export HAPROXY_SYNC_PROMTOOL="$bin"
  say "promtool $version: $bin"
}

fetch_promtool() (
  # A subshell, so that the EXIT trap removing the temp dir stays here. $1: the package version, $2: where.
  local version="$1" bin="$2" tmp deb
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # apt fetches as the _apt user when it can write the directory; otherwise it warns and fetches as us.
  if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then
    chown _apt "$tmp"
  fi
  say "downloading Debian's prometheus $version for its promtool"
  if ! (cd "$tmp" && apt-get download -qq "prometheus=$version" >download.log 2>&1); then
    cat "$tmp/download.log" >&2
    say "apt-get download prometheus=$version failed; the promtool tests are skipped"
    exit 1
  fi
  deb="$(find "$tmp" -maxdepth 1 -name 'prometheus_*.deb' -print -quit)"
  if [ -z "$deb" ] || ! dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" ./usr/bin/promtool; then
    say "no usr/bin/promtool in ${deb:-the download}; the promtool tests are skipped"
    exit 1
  fi
  mkdir -p "$(dirname "$bin")"
  cp "$tmp/usr/bin/promtool" "$bin.partial"
  mv -f "$bin.partial" "$bin"
  if ! "$bin" --version >/dev/null 2>&1; then
    rm -f "$bin"
    say "the extracted promtool does not run; the promtool tests are skipped"
    exit 1
  fi
)
