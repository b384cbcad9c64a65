#!/usr/bin/env bash
# HTTP API load test with wrk (Debian package): requests/s and latency percentiles for
# GET /healthz, GET /api/metrics/summary with about 100k events in the store, and
# POST /api/mcp/enqueue. Runs a release `cogo serve` (no workers, rate limits off) on a scratch
# SQLite data dir; the events come from noop messages drained by a `cogo worker` beforehand.
# Usage: bench/api.sh [SECONDS_PER_RUN] [CONNECTIONS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
seconds="${1:-10}"
connections="${2:-32}"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked -p cli >/dev/null
bin="${CARGO_TARGET_DIR:-$root/target}/release/cogo"
data="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$data"' EXIT
cogo() { "$bin" --data-dir "$data" --log error "$@"; }

# ~100k events: 34,000 messages for the noop role (intent mcp_call, so the MCP summary reads them),
# each scheduled, claimed and succeeded
messages=34000
echo "seeding: $messages messages for the noop role through a worker (3 events each)"
cogo enqueue --service bus --role noop --intent mcp_call --count "$messages" >/dev/null
cogo worker --roles noop --concurrency 32 >/dev/null 2>&1 &
worker=$!
pids+=("$worker")
until [ "$(cogo messages --status queued --limit 1 --json | wc -l)" -eq 0 ]; do sleep 0.5; done
sleep 1
kill "$worker" && wait "$worker" 2>/dev/null || true

admin=bench-admin-token-0123456789abcdef
COGO_ADMIN_TOKEN=$admin "$bin" --data-dir "$data" --log error serve --listen "127.0.0.1:$port" --rate-limit 0 \
  --api-tokens bench-reader >/dev/null 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
events=$(curl -fs -H "authorization: Bearer bench-reader" "http://127.0.0.1:$port/api/events?limit=1000" >/dev/null && \
  python3 -c "import sqlite3,sys; print(sqlite3.connect('$data/cogo.db').execute('select count(*) from bus_events').fetchone()[0])")
echo "store: $events events"
cat >"$data/enqueue.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-admin-token"] = os.getenv("ADMIN")
wrk.body = '{"toolset": "browser", "tool": "browser_navigate", "params": {"url": "http://127.0.0.1:3010/"}}'
LUA
run() {
  local name="$1"; shift
  local out
  out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency "$@")
  local rps p50 p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  printf '%-34s %10s req/s   p50 %8s   p99 %8s\n' "$name" "$rps" "$p50" "$p99"
  if echo "$out" | grep -q "Non-2xx"; then echo "  $(echo "$out" | grep 'Non-2xx')"; fi
}
echo "wrk: 2 threads, $connections connections, ${seconds}s per route; $(nproc) CPUs shared with the server"
run "GET /healthz" "http://127.0.0.1:$port/healthz"
run "GET /api/metrics/summary ($events ev)" -H "authorization: Bearer bench-reader" "http://127.0.0.1:$port/api/metrics/summary"
ADMIN=$admin run "POST /api/mcp/enqueue" -s "$data/enqueue.lua" "http://127.0.0.1:$port/api/mcp/enqueue"
