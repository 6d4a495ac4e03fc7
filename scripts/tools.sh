#!/usr/bin/env bash
# What building and testing need beyond cargo: `protoc` (the build compiles proto/ with prost-build;
# from the distribution's protobuf-compiler package when missing), and the real clients the protocol
# tests drive (telemetrygen, grpcurl) in ~/.cache/log-analyzer/bin with `go install`, once: a binary
# already there is kept, so later runs cost nothing. The tests look for them there (or in TOOLS_BIN).
set -euo pipefail
# apt_install COMMAND PACKAGE: the distribution's PACKAGE, unless COMMAND is already there.
apt_install() {
    command -v "$1" >/dev/null && return
    echo "tools.sh: installing $1 ($2)" >&2
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "$2" >/dev/null
}
[[ -n "${PROTOC:-}" ]] || apt_install protoc protobuf-compiler
# The charts of `scripts/bench.sh scale` (PNG through cairo; the -nox build pulls in no X11).
apt_install gnuplot gnuplot-nox
# kcat: the scripted floor of `scripts/bench.sh ingest2` (kcat -C | psql COPY), from the distribution.
apt_install kcat kcat
# pgbench: `scripts/bench.sh search` sends the search's SQL at a fixed rate with it (psql's package).
apt_install pgbench postgresql-client
# The dashboard's browser tests (tests/browser/): the distribution's Chromium and its matching driver,
# driven by Selenium from a venv in the tools cache (reused while it holds this version).
apt_install chromium chromium
apt_install chromedriver chromium-driver
browser_venv="${LA_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/log-analyzer}/browser-venv"
selenium_pin="selenium==4.51.0"
if ! { [[ -f "$browser_venv/.installed" ]] && [[ "$(cat "$browser_venv/.installed")" == "$selenium_pin" ]] &&
    "$browser_venv/bin/python" -c 'import selenium' 2>/dev/null; }; then
    echo "tools.sh: installing $selenium_pin into $browser_venv" >&2
    rm -rf "$browser_venv"
    python3 -m venv "$browser_venv"
    # Selenium Manager would report usage to an outside host; the tests point it at Debian's driver.
    SE_AVOID_STATS=true "$browser_venv/bin/pip" install --disable-pip-version-check -q "$selenium_pin"
    echo "$selenium_pin" >"$browser_venv/.installed"
fi
bin="${TOOLS_BIN:-$HOME/.cache/log-analyzer/bin}"
mkdir -p "$bin"
go=go
command -v go >/dev/null || go=/usr/local/go/bin/go
install() {
    local name=$1 module=$2
    if [[ -x "$bin/$name" ]]; then
        return
    fi
    echo "tools.sh: installing $name ($module)" >&2
    # One package at a time: the build machines have two cores.
    GOBIN="$bin" GOFLAGS=-mod=mod "$go" install -p 1 "$module"
}
install telemetrygen github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@v0.161.0
install grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3
# The fixed-rate (open loop) HTTP load of `scripts/bench.sh protocols`.
install vegeta github.com/tsenart/vegeta/v12@v12.12.0
