#!/usr/bin/env bash
# Side-by-side query_range latency: Debian's Prometheus, Debian's
# VictoriaMetrics and Strata (1 ingester + querier), one after the other on
# this machine, each loaded with the same `bench write` data (SERIES series,
# HISTORY of 15 s samples), then timed with the dashboard queries of
# loadgen/queries/dashboard.txt (median and p90 of RUNS runs, step 60 s over
# the whole history). Strata cuts 2 h blocks (served by `strata store`) and
# releases them from memory once uploaded, so with HISTORY=24h most of the
# data is read from Parquet blocks.
#
#   bash loadgen/bench/query.sh [SERIES] [HISTORY] [RUNS]
# (SKIP_FRONTEND=1 leaves out the results-cache runs; ONLY_STRATA=1 the others.)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
SERIES="${1:-10000}"; HISTORY="${2:-2h}"; RUNS="${3:-10}"
# BIN_DIR: binaries already built (skips the release build).
if [ -z "${BIN_DIR:-}" ]; then make -s binaries; fi  # the release set `make demo` builds, so the two share one build
B="${BIN_DIR:-$CARGO_TARGET_DIR/release}"
W="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
wait_up() { for _ in $(seq 1 150); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "not up: $1" >&2; return 1; }
alive() { kill -0 "$1" 2>/dev/null || { echo "process $1 exited right after starting (port already in use? see its log)" >&2; exit 1; }; }
load() { "$B/strata-loadgen" bench write --url "$1" --series "$SERIES" --history "$HISTORY" --interval 15s --senders 4 --samples-per-series 20 | grep '^bench write'; }
run_queries() { # name base-url [more bench query flags]
  echo "== $1"
  "$B/strata-loadgen" bench query --url "$2" --queries loadgen/queries/dashboard.txt --range "$HISTORY" --step 60s --runs "$RUNS" "${@:3}"
}

if [ -z "${ONLY_STRATA:-}" ] && command -v prometheus >/dev/null; then
  printf 'global:\n  scrape_interval: 15s\n' > "$W/prom.yml"
  prometheus --config.file="$W/prom.yml" --storage.tsdb.path="$W/prom" --web.listen-address=127.0.0.1:19990 \
    --web.enable-remote-write-receiver --log.level=warn >"$W/prom.log" 2>&1 &
  P=$!; wait_up http://127.0.0.1:19990/-/ready; alive $P
  load http://127.0.0.1:19990/api/v1/write
  run_queries "prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}')" http://127.0.0.1:19990
  kill $P; wait $P 2>/dev/null || true
fi
if [ -z "${ONLY_STRATA:-}" ] && command -v victoria-metrics >/dev/null; then
  victoria-metrics -storageDataPath="$W/vm" -httpListenAddr=127.0.0.1:19991 -loggerLevel=ERROR \
    -search.disableCache >"$W/vm.log" 2>&1 &
  P=$!; wait_up http://127.0.0.1:19991/health; alive $P
  load http://127.0.0.1:19991/api/v1/write
  curl -s http://127.0.0.1:19991/internal/force_flush >/dev/null || true
  sleep 2
  run_queries "victoria-metrics (cache disabled)" http://127.0.0.1:19991
  kill $P; wait $P 2>/dev/null || true
fi
"$B/strata" ingester --raft.node-id 1 --raft.peers 1=127.0.0.1:19195 --grpc.listen-address 127.0.0.1:19195 \
  --web.listen-address 127.0.0.1:19109 --storage.path "$W/s1" --objstore.path "$W/objstore" \
  --block.duration 2h --block.retain-after-upload 1s --log.level warn >"$W/s1.log" 2>&1 &
P1=$!; wait_up http://127.0.0.1:19109/-/ready; alive $P1
# STORE_FLAGS: more store gateway flags, e.g. "--store.cache.max-bytes 0".
# shellcheck disable=SC2086
"$B/strata" store --grpc.listen-address 127.0.0.1:19196 --web.listen-address 127.0.0.1:19197 \
  --objstore.path "$W/objstore" --store.sync-interval 2s --log.level warn ${STORE_FLAGS:-} >"$W/st.log" 2>&1 &
P3=$!; wait_up http://127.0.0.1:19197/-/ready; alive $P3
# Without the query frontend (no splitting, no results cache): every run
# evaluates the whole range, as Prometheus and VictoriaMetrics (cache off) do.
"$B/strata" querier --web.listen-address 127.0.0.1:19190 --endpoint 127.0.0.1:19195 --endpoint 127.0.0.1:19196 \
  --query.split-interval 0s --query.results-cache.max-bytes 0 --log.level warn >"$W/q.log" 2>&1 &
P2=$!; wait_up http://127.0.0.1:19190/-/ready; alive $P2
# With the defaults: split by UTC day, results cached in process.
"$B/strata" querier --web.listen-address 127.0.0.1:19193 --endpoint 127.0.0.1:19195 --endpoint 127.0.0.1:19196 \
  --log.level warn >"$W/q2.log" 2>&1 &
P4=$!; wait_up http://127.0.0.1:19193/-/ready; alive $P4
load http://127.0.0.1:19109/api/v1/write
sleep 15  # blocks cut during the load: uploaded, synced by the store, released by the ingester
echo "   blocks in object storage: $(find "$W/objstore" -name meta.json | wc -l); ingester: $(curl -s http://127.0.0.1:19109/api/v1/status/raft | grep -o '"head_samples":[0-9]*')"
run_queries "strata (1 ingester + store + querier, no frontend)" http://127.0.0.1:19190
if [ -z "${SKIP_FRONTEND:-}" ]; then
  # Cold: each query once, no warm-up, on an empty cache (split, evaluated, stored).
  RUNS_SAVED=$RUNS; RUNS=1
  run_queries "strata frontend, cold (empty results cache)" http://127.0.0.1:19193 --warmup=false
  RUNS=$RUNS_SAVED
  # Warm: the dashboard refreshed; the window moves with the clock, so the
  # last minutes are evaluated again on every run.
  run_queries "strata frontend, warm (results cache)" http://127.0.0.1:19193
  echo "   $(curl -s http://127.0.0.1:19193/metrics | grep -E '^strata_querier_results_cache_(lookups_total|bytes)' | tr '\n' ' ')"
  echo "   $(curl -s http://127.0.0.1:19197/metrics | grep -E '^strata_store_block_cache_' | tr '\n' ' ')"
fi
kill $P1 $P2 $P3 $P4; wait $P1 $P2 $P3 $P4 2>/dev/null || true
