#!/usr/bin/env bash
# Write latency while the ingester snapshots its state and cuts blocks:
# one Strata ingester fed the same live-shape load (`strata-loadgen bench
# write`, 1 sample per series per request) three times:
#   quiet      no snapshot and no cut during the run (the baseline);
#   snapshots  a Raft snapshot every SNAPSHOT_LOGS log entries;
#   cuts       a block cut every CUT_EVERY of sample time.
# Prints p50 / p99 / p99.9 / max request latency of each run: a write that
# waits behind a snapshot or a cut shows in the tail and the max.
# Then Prometheus and VictoriaMetrics with the same load, for the ingest
# rate side by side (docs/benchmarks.md).
#
#   bash loadgen/bench/stalls.sh [SERIES] [HISTORY] [SNAPSHOT_LOGS] [CUT_EVERY]
#
# RUNS="snapshots cuts" runs a subset (default: quiet snapshots cuts compare).
# STRATA_BIN=/path/to/strata runs another build of the ingester (e.g. one
# from before a change) with the same load generator; BIN_DIR=/dir runs
# the strata and strata-loadgen binaries in /dir without building.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
SERIES="${1:-100000}"; HISTORY="${2:-1h}"; SNAPSHOT_LOGS="${3:-1000}"; CUT_EVERY="${4:-10m}"
# BIN_DIR=/dir with strata and strata-loadgen: use those builds, build nothing.
if [ -n "${BIN_DIR:-}" ]; then B="$BIN_DIR"; else make -s binaries; B="$CARGO_TARGET_DIR/release"; fi
STRATA="${STRATA_BIN:-$B/strata}"
W="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
wait_up() { for _ in $(seq 1 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "not up: $1" >&2; return 1; }
bench() { # name url pid
  echo "== $1"
  "$B/strata-loadgen" bench write --url "$2" --series "$SERIES" --history "$HISTORY" --interval 15s --senders 4 \
    --samples-per-series 1 --pid "$3" | grep -v '^{'
}
run_strata() { # name extra-flags...
  local name=$1; shift
  rm -rf "$W/s"
  "$STRATA" ingester --raft.node-id 1 --raft.peers 1=127.0.0.1:19195 --grpc.listen-address 127.0.0.1:19195 \
    --web.listen-address 127.0.0.1:19109 --storage.path "$W/s" --objstore.path "$W/objstore" --log.level info \
    "$@" >"$W/s.log" 2>&1 &
  local p=$!
  wait_up http://127.0.0.1:19109/-/ready
  bench "strata 1 ingester, $name" http://127.0.0.1:19109/api/v1/write $p
  echo "   snapshots built: $(grep -c 'built snapshot' "$W/s.log" || true), blocks cut: $(grep -c 'cut block' "$W/s.log" || true), RSS $(($(awk '/VmRSS/{print $2}' /proc/$p/status) / 1024)) MiB"
  # How long each snapshot held the state lock (capture) and each cut part ran inside the apply.
  local caps cuts
  caps=$(grep 'built snapshot' "$W/s.log" | sed 's/\x1b\[[0-9;]*m//g' | sed -n 's/.*capture_ms=\([0-9]*\).*/\1/p' | sort -n | tr '\n' ' ' || true)
  cuts=$(grep 'cut block' "$W/s.log" | sed 's/\x1b\[[0-9;]*m//g' | sed -n 's/.*took_ms=\([0-9]*\).*/\1/p' | sort -n | tail -3 | tr '\n' ' ' || true)
  [ -n "$caps" ] && echo "   snapshot capture under the state lock (ms, sorted): $caps"
  [ -n "$cuts" ] && echo "   longest cut parts inside the apply (ms): $cuts"
  true
  kill $p; wait $p 2>/dev/null || true
}
RUNS="${RUNS:-quiet snapshots cuts compare}"  # a subset re-runs only those
for run in $RUNS; do case $run in
  quiet) run_strata "quiet" --raft.snapshot-logs 100000000 --block.duration 24h ;;
  snapshots) run_strata "snapshots every $SNAPSHOT_LOGS entries" --raft.snapshot-logs "$SNAPSHOT_LOGS" --block.duration 24h ;;
  cuts) run_strata "cuts every $CUT_EVERY" --raft.snapshot-logs 100000000 --block.duration "$CUT_EVERY" --block.grace 1m ;;
esac; done
[[ " $RUNS " == *" compare "* ]] || exit 0

if command -v prometheus >/dev/null; then
  printf 'global:\n  scrape_interval: 15s\n' > "$W/prom.yml"
  prometheus --config.file="$W/prom.yml" --storage.tsdb.path="$W/prom" --web.listen-address=127.0.0.1:19990 \
    --web.enable-remote-write-receiver --log.level=warn >"$W/prom.log" 2>&1 &
  P=$!; wait_up http://127.0.0.1:19990/-/ready
  bench "prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}')" http://127.0.0.1:19990/api/v1/write $P
  kill $P; wait $P 2>/dev/null || true
fi
if command -v victoria-metrics >/dev/null; then
  victoria-metrics -storageDataPath="$W/vm" -httpListenAddr=127.0.0.1:19991 -loggerLevel=ERROR >"$W/vm.log" 2>&1 &
  P=$!; wait_up http://127.0.0.1:19991/health
  bench "victoria-metrics" http://127.0.0.1:19991/api/v1/write $P
  kill $P; wait $P 2>/dev/null || true
fi
