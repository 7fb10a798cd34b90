#!/usr/bin/env bash
# Times Strata again on a long-range data set kept by
# `KEEP=DIR bash loadgen/bench/long-range.sh …` (or any bucket plus the
# ingester directory that loaded it): the dashboard-long queries over
# HISTORY, cold and warm, without and with the query frontend.
#
#   bash loadgen/bench/long-range-requery.sh DIR [HISTORY] [RUNS]
# (BIN_DIR: release binaries, default $CARGO_TARGET_DIR/release; BUCKET:
# the bucket directory, default DIR/objstore; QUERIES: the query file;
# OTHERS=1: first time VictoriaMetrics and Prometheus again on the data
# long-range.sh loaded into DIR/vm and DIR/prom, as that script does —
# VictoriaMetrics cold on a fresh process and warm, Prometheus once
# (PROM_RUNS more warm runs, default 0) after replaying its data — so a
# side-by-side run of a new build needs no new load; ONLY_OTHERS=1: those
# two alone.)
#
# The ingester replays DIR/s1 and is given 45 s to drop the blocks it had
# already uploaded (after a restart it holds them for
# --block.retain-after-upload, and queries over that time are not pushed
# down meanwhile). Then, per state, a store gateway and a querier start
# fresh — empty block cache, empty results cache — and the first run of
# each query once the querier knows both sources is "cold"; the median of
# RUNS runs after a warm-up is "warm".
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
DIR="$1"; HISTORY="${2:-30d}"; RUNS="${3:-3}"
B="${BIN_DIR:-$CARGO_TARGET_DIR/release}"
BUCKET="${BUCKET:-$DIR/objstore}"
QUERIES="${QUERIES:-loadgen/queries/dashboard-long.txt}"
END="$(cat "$DIR/end")"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT
wait_up() { for _ in $(seq 1 600); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "not up: $1" >&2; return 1; }
others() { # name base-url runs warmup
  echo "== $1"
  "$B/strata-loadgen" bench query --url "$2" --queries "$QUERIES" --range "$HISTORY" --step 1h --end "$END" \
    --runs "$3" --warmup="$4"
}
OTHERS="${OTHERS:-${ONLY_OTHERS:-}}"
if [ -n "${OTHERS:-}" ] && [ -d "$DIR/vm" ]; then
  command -v victoria-metrics >/dev/null || { echo "victoria-metrics not installed" >&2; exit 1; }
  # Its rollup result cache persists across restarts: emptied, so "cold"
  # is what long-range.sh measured (the other caches as it saved them).
  rm -rf "$DIR/vm/cache/rollupResult" "$DIR/vm/cache/rollupResult.key.prefix"
  victoria-metrics -storageDataPath="$DIR/vm" -httpListenAddr=127.0.0.1:19991 -loggerLevel=ERROR \
    -retentionPeriod=90d >>"$DIR/vm.log" 2>&1 &
  P=$!; wait_up http://127.0.0.1:19991/health
  VMV="$(dpkg-query -W -f '${Version}' victoria-metrics 2>/dev/null || true)"
  others "victoria-metrics $VMV (caches on), cold (first run, fresh process)" http://127.0.0.1:19991 1 false
  others "victoria-metrics $VMV (caches on), warm (median of $RUNS)" http://127.0.0.1:19991 "$RUNS" true
  kill $P; wait $P 2>/dev/null || true
fi
if [ -n "${OTHERS:-}" ] && [ -d "$DIR/prom" ]; then
  command -v prometheus >/dev/null || { echo "prometheus not installed" >&2; exit 1; }
  prometheus --config.file="$DIR/prom.yml" --storage.tsdb.path="$DIR/prom" --web.listen-address=127.0.0.1:19990 \
    --storage.tsdb.retention.time=90d --query.timeout=10m --log.level=warn >>"$DIR/prom.log" 2>&1 &
  P=$!
  # Replaying its write-ahead and out-of-order logs takes minutes.
  for _ in $(seq 1 3000); do curl -sf http://127.0.0.1:19990/-/ready >/dev/null && break; sleep 0.2; done
  curl -sf http://127.0.0.1:19990/-/ready >/dev/null || { echo "prometheus not ready" >&2; exit 1; }
  PROM="prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}')"
  others "$PROM, cold (first run after its restart)" http://127.0.0.1:19990 1 false
  if [ "${PROM_RUNS:-0}" -gt 0 ]; then others "$PROM, warm (median of $PROM_RUNS)" http://127.0.0.1:19990 "$PROM_RUNS" true; fi
  kill $P; wait $P 2>/dev/null || true
fi
if [ -n "${ONLY_OTHERS:-}" ]; then exit 0; fi
"$B/strata" ingester --raft.node-id 1 --raft.peers 1=127.0.0.1:19195 --grpc.listen-address 127.0.0.1:19195 \
  --web.listen-address 127.0.0.1:19109 --storage.path "$DIR/s1" --objstore.path "$BUCKET" \
  --block.duration 2h --block.retain-after-upload 1s --log.level warn >>"$DIR/requery-ingester.log" 2>&1 &
wait_up http://127.0.0.1:19109/-/ready
sleep 45
state() { # label [querier flags]
  "$B/strata" store --grpc.listen-address 127.0.0.1:19196 --web.listen-address 127.0.0.1:19197 \
    --objstore.path "$BUCKET" --store.sync-interval 2s --log.level warn >>"$DIR/requery-store.log" 2>&1 &
  local store=$!
  "$B/strata" querier --web.listen-address 127.0.0.1:19190 --endpoint 127.0.0.1:19195 --endpoint 127.0.0.1:19196 \
    --query.timeout 10m --log.level warn "${@:2}" >>"$DIR/requery-querier.log" 2>&1 &
  local querier=$!
  wait_up http://127.0.0.1:19197/-/ready; wait_up http://127.0.0.1:19190/-/ready
  # Both sources known to the querier, with data (time ranges in its
  # store list).
  for _ in $(seq 1 100); do
    known=$(curl -s http://127.0.0.1:19190/api/v1/stores | python3 -c \
      'import json, sys; print(sum(1 for s in json.load(sys.stdin)["data"] if s.get("minTime", 1) <= s.get("maxTime", 0)))')
    [ "$known" = 2 ] && break
    sleep 0.2
  done
  local q=("$B/strata-loadgen" bench query --url http://127.0.0.1:19190 --queries "$QUERIES" --range "$HISTORY"
    --step 1h --end "$END")
  echo "== strata, $1: cold (first run, store gateway and querier fresh)"; "${q[@]}" --runs 1 --warmup=false
  echo "== strata, $1: warm (median of $RUNS after a warm-up)"; "${q[@]}" --runs "$RUNS" --warmup=true
  kill "$store" "$querier"; wait "$store" "$querier" 2>/dev/null || true
}
state "no frontend" --query.split-interval 0s --query.results-cache.max-bytes 0 --query.max-samples 10000000000
state "frontend (default flags)"
