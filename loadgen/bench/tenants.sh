#!/usr/bin/env bash
# A tenant over its ingestion rate does not slow the others down: one
# ingester with --limits.overrides-file limiting tenant `noisy`, and tenant
# `quiet` sending the live-shape load (`strata-loadgen bench write`):
#   alone       quiet alone (the baseline)
#   limited     quiet, while noisy sends flat out over its limit (429s, retried with backoff)
#   unlimited   quiet, while noisy sends flat out with no limit (what the limit buys)
# ROUNDS times each (default 2), printing quiet's samples/s, latency and the
# server's CPU per sample, and noisy's outcome.
#
#   bash loadgen/bench/tenants.sh [SERIES] [HISTORY] [NOISY_RATE]
#
# BIN_DIR=/dir runs the strata and strata-loadgen binaries in /dir without building.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
SERIES="${1:-50000}"; HISTORY="${2:-1h}"; NOISY_RATE="${3:-20000}"; ROUNDS="${ROUNDS:-2}"
if [ -n "${BIN_DIR:-}" ]; then B="$BIN_DIR"; else make -s binaries; B="$CARGO_TARGET_DIR/release"; fi
W="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
wait_up() { for _ in $(seq 1 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "not up: $1" >&2; return 1; }
printf 'tenants:\n  noisy: { ingestion_rate: %s, ingestion_burst: %s }\n' "$NOISY_RATE" "$NOISY_RATE" >"$W/limited.yml"
: >"$W/unlimited.yml"

run() { # name noisy(0/1) overrides-file
  local name=$1 noisy=$2 overrides=$3
  rm -rf "$W/s"
  "$B/strata" ingester --raft.node-id 1 --raft.peers 1=127.0.0.1:19195 --grpc.listen-address 127.0.0.1:19195 \
    --web.listen-address 127.0.0.1:19109 --storage.path "$W/s" --objstore.path "$W/objstore" --log.level warn \
    --raft.snapshot-logs 100000000 --block.duration 24h --limits.overrides-file "$overrides" >"$W/s.log" 2>&1 &
  local p=$!
  wait_up http://127.0.0.1:19109/-/ready
  echo "== $name"
  local n=""
  if [ "$noisy" = 1 ]; then
    # Noisy: twice quiet's data, 4 senders of its own, started first.
    "$B/strata-loadgen" bench write --url http://127.0.0.1:19109/api/v1/write --series "$((SERIES * 2))" \
      --history "$HISTORY" --interval 15s --senders 4 --samples-per-series 1 --header X-Scope-OrgID=noisy \
      >"$W/noisy.log" 2>&1 &
    n=$!
    # Noisy generates its requests first (CPU-bound, twice quiet's data):
    # start quiet only once noisy is sending, so that generation does not
    # compete with quiet's run.
    for _ in $(seq 1 600); do grep -q '; sending' "$W/noisy.log" 2>/dev/null && break; sleep 0.2; done
    grep -q '; sending' "$W/noisy.log" || { echo "noisy never started sending" >&2; cat "$W/noisy.log" >&2; exit 1; }
    sleep 2
  fi
  "$B/strata-loadgen" bench write --url http://127.0.0.1:19109/api/v1/write --series "$SERIES" --history "$HISTORY" \
    --interval 15s --senders 4 --samples-per-series 1 --pid "$p" --header X-Scope-OrgID=quiet | grep '^bench write' \
    | sed 's/^/quiet: /'
  if [ -n "$n" ]; then
    kill "$n" 2>/dev/null || true; wait "$n" 2>/dev/null || true
    curl -s http://127.0.0.1:19109/metrics | grep -E '^strata_ingester_tenant_samples_(written|rejected)_total\{tenant="noisy"' \
      | sed 's/^/noisy: /' || true
  fi
  kill $p; wait $p 2>/dev/null || true
}
for _ in $(seq 1 "$ROUNDS"); do
  run alone 0 "$W/unlimited.yml"
  run limited 1 "$W/limited.yml"
  run unlimited 1 "$W/unlimited.yml"
done
