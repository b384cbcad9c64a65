#!/usr/bin/env bash
# The soak test: mixed traffic against a real `cogo up` (SQLite, server-everything for MCP calls)
# for a chosen time, reported in six windows; fails when memory grows, latency drifts, a request
# fails or work is left unfinished.
# Usage: bench/soak.sh [SECONDS] [OPS_PER_SECOND]   (default 600 s at 50 ops/s; CI runs 40 s)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-600}"
rate="${2:-50}"
echo "building cogo (release)" >&2
cargo build --release --locked -p cli >&2
scripts/mcp-servers install >&2
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
COGO_MODELS_DIR="${COGO_MODELS_DIR:-$(pwd)/.cogo/models}" \
  "${CARGO_TARGET_DIR:-target}/release/cogo" --data-dir "$data" bench soak --duration "$duration" --rate "$rate"
