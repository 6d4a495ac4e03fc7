#!/usr/bin/env bash
# The test command: starts the real stack (Kafka, PostgreSQL, Redis on loopback), then runs every
# test of the workspace against it. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/stack.sh up
scripts/tools.sh
set -a
eval "$(scripts/stack.sh env)"
set +a
cargo test --workspace "$@"
