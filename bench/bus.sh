#!/usr/bin/env bash
# The bus benchmark side by side: COGO on SQLite and on PostgreSQL, then the peer Postgres queues
# (bench/peers) with the same workload against the same server. One JSON object per line.
# Usage: bench/bus.sh [peer ...]   (JOBS and CONCURRENCY override 20000 and 16)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${JOBS:-20000}"
concurrency="${CONCURRENCY:-16}"
echo "building cogo (release)" >&2
cargo build --release --locked -p cli >&2
for backend in sqlite postgres; do
  "${CARGO_TARGET_DIR:-target}/release/cogo" bench bus --backend "$backend" --jobs "$jobs" --concurrency "$concurrency" --json
done
if [ -x bench/peers/run.sh ]; then
  PEERS_JOBS="$jobs" PEERS_CONCURRENCY="$concurrency" bench/peers/run.sh "$@"
fi
