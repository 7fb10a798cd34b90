#!/usr/bin/env bash
# Long-range dashboards side by side: Debian's Prometheus, Debian's
# VictoriaMetrics (its caches on) and Strata, each loaded with the same
# `bench write` data (SERIES series, HISTORY of 15 s samples), then timed
# with loadgen/queries/dashboard-long.txt over the whole history (hourly
# steps, range one step, start and end on the hour), cold (first run after
# loading) and warm (the median of RUNS runs).
#
# Strata: 1 ingester cutting 2 h blocks, `strata compact --once` with its
# defaults (24 h windows; 5-minute blocks of data older than 40 h, 1-hour
# blocks of data older than 10 days), a store gateway and queriers. Strata
# is timed reading raw samples only (max_source_resolution=0s, no
# frontend), reading downsampled blocks (the default, no frontend), and
# with the query frontend (split by day, results cache) cold and warm.
#
#   bash loadgen/bench/long-range.sh [SERIES] [HISTORY] [RUNS]
# (BIN_DIR: release binaries already built; ONLY_STRATA=1 skips the others;
# COMPACT_FLAGS: more `strata compact` flags, e.g. "--downsampling.5m-after=0s
# --downsampling.1h-after=0s" to downsample every settled day;
# THEN_COMPACT_FLAGS: after Strata's first measurement, run `strata compact
# --once` again with these flags and measure again on fresh processes (two
# states of one load); RAW_MAX_SAMPLES: --query.max-samples of the querier
# without frontend, so that the raw-only run can read every sample, default
# 10000000000; PROM_RUNS: warm runs of Prometheus, which has no query cache,
# default RUNS, 0 = cold only; KEEP=DIR: load into DIR and keep it — the
# bucket, Strata's ingester directory and the data's end — so that
# loadgen/bench/long-range-requery.sh can time Strata on it again.)
#
# The data is generated while it is sent (`bench write --stream`), so memory
# does not grow with HISTORY (30 days = 1.7 G samples for 10 000 series).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
SERIES="${1:-10000}"; HISTORY="${2:-7d}"; RUNS="${3:-5}"
if [ -z "${BIN_DIR:-}" ]; then make -s binaries; fi
B="${BIN_DIR:-$CARGO_TARGET_DIR/release}"
if [ -n "${KEEP:-}" ]; then
  W="$KEEP"; mkdir -p "$W"; trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT
else
  W="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
fi
wait_up() { for _ in $(seq 1 300); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "not up: $1" >&2; return 1; }
alive() { kill -0 "$1" 2>/dev/null || { echo "process $1 exited right after starting (see its log)" >&2; exit 1; }; }
# The data ends at the last full hour before the load starts, so every
# system holds the same samples of the queried range.
END=$(( $(date +%s) / 3600 * 3600 )); echo "$END" >"$W/end"
load() {
  local t0; t0=$(date +%s)
  "$B/strata-loadgen" bench write --url "$1" --series "$SERIES" --history "$HISTORY" --interval 15s --senders 4 \
    --samples-per-series 120 --end "$END" --stream | grep '^bench write' | cut -c1-200
  echo "   loaded in $(( $(date +%s) - t0 )) s"
}
run_queries() { # name base-url runs warmup [more bench query flags]
  echo "== $1"
  "$B/strata-loadgen" bench query --url "$2" --queries loadgen/queries/dashboard-long.txt --range "$HISTORY" \
    --step 1h --end "$END" --runs "$3" --warmup="$4" "${@:5}"
}
cold_warm() { # name base-url [flags]
  run_queries "$1, cold (first run)" "$2" 1 false "${@:3}"
  run_queries "$1, warm" "$2" "$RUNS" true "${@:3}"
}

if [ -z "${ONLY_STRATA:-}" ] && command -v prometheus >/dev/null; then
  # Out-of-order ingestion on, so the backfill is not refused as "out of
  # bounds" when one sender is behind another across a head compaction.
  printf 'global:\n  scrape_interval: 15s\nstorage:\n  tsdb:\n    out_of_order_time_window: 400d\n' > "$W/prom.yml"
  prometheus --config.file="$W/prom.yml" --storage.tsdb.path="$W/prom" --web.listen-address=127.0.0.1:19990 \
    --web.enable-remote-write-receiver --storage.tsdb.retention.time=90d --query.timeout=10m --log.level=warn >"$W/prom.log" 2>&1 &
  P=$!; wait_up http://127.0.0.1:19990/-/ready; alive $P
  load http://127.0.0.1:19990/api/v1/write
  # Not restarted (replaying the out-of-order log takes minutes): "cold" is
  # the first query after loading; Prometheus has no query cache.
  PROM="prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}')"
  run_queries "$PROM, cold (first run)" http://127.0.0.1:19990 1 false
  if [ "${PROM_RUNS:-$RUNS}" -gt 0 ]; then run_queries "$PROM, warm" http://127.0.0.1:19990 "${PROM_RUNS:-$RUNS}" true; fi
  kill $P; wait $P 2>/dev/null || true
fi
if [ -z "${ONLY_STRATA:-}" ] && command -v victoria-metrics >/dev/null; then
  victoria-metrics -storageDataPath="$W/vm" -httpListenAddr=127.0.0.1:19991 -loggerLevel=ERROR \
    -retentionPeriod=90d >"$W/vm.log" 2>&1 &
  P=$!; wait_up http://127.0.0.1:19991/health; alive $P
  load http://127.0.0.1:19991/api/v1/write
  curl -s http://127.0.0.1:19991/internal/force_flush >/dev/null || true
  # Restarted: cold caches.
  kill $P; wait $P 2>/dev/null || true
  victoria-metrics -storageDataPath="$W/vm" -httpListenAddr=127.0.0.1:19991 -loggerLevel=ERROR \
    -retentionPeriod=90d >>"$W/vm.log" 2>&1 &
  P=$!; wait_up http://127.0.0.1:19991/health; alive $P
  # Debian's build prints no version; its package has it.
  VMV="$(victoria-metrics -version 2>&1 | head -1 | cut -c1-40)"
  [ -n "$VMV" ] || VMV="$(dpkg-query -W -f '${Version}' victoria-metrics 2>/dev/null || true)"
  cold_warm "victoria-metrics $VMV (caches on)" http://127.0.0.1:19991
  kill $P; wait $P 2>/dev/null || true
fi
"$B/strata" ingester --raft.node-id 1 --raft.peers 1=127.0.0.1:19195 --grpc.listen-address 127.0.0.1:19195 \
  --web.listen-address 127.0.0.1:19109 --storage.path "$W/s1" --objstore.path "$W/objstore" \
  --block.duration 2h --block.retain-after-upload 1s --log.level warn >"$W/s1.log" 2>&1 &
P1=$!; wait_up http://127.0.0.1:19109/-/ready; alive $P1
load http://127.0.0.1:19109/api/v1/write
sleep 15  # the last blocks cut and uploaded
compact() { # flags
  local t0; t0=$(date +%s)
  # shellcheck disable=SC2086
  "$B/strata" compact --objstore.path "$W/objstore" --once --log.level warn $1 >>"$W/compact.log" 2>&1
  echo "   strata compact ${1:-(defaults)}: $(( $(date +%s) - t0 )) s; visible blocks by resolution:" \
    "$(for d in "$W"/objstore/*/*/; do [ -e "$d/deletion-mark.json" ] || grep -ho '"resolution": [0-9]*' "$d/meta.json"; done | sort | uniq -c | tr -s ' ' | tr '\n' ';')" \
    "bytes: raw $(find "$W/objstore" -name samples.parquet -printf '%s\n' | awk '{s+=$1} END {print s}')," \
    "aggregates $(find "$W/objstore" -name aggregates.parquet -printf '%s\n' | awk '{s+=$1} END {print s+0}')," \
    "raw blocks' hourly rollups $(find "$W/objstore" -name rollup-1h.parquet -printf '%s\n' | awk '{s+=$1} END {print s+0}')"
}
measure() { # label
  "$B/strata" store --grpc.listen-address 127.0.0.1:19196 --web.listen-address 127.0.0.1:19197 \
    --objstore.path "$W/objstore" --store.sync-interval 2s --log.level warn >>"$W/st.log" 2>&1 &
  P3=$!; wait_up http://127.0.0.1:19197/-/ready; alive $P3
  sleep 5  # first sync of the compacted blocks
  "$B/strata" querier --web.listen-address 127.0.0.1:19190 --endpoint 127.0.0.1:19195 --endpoint 127.0.0.1:19196 \
    --query.split-interval 0s --query.results-cache.max-bytes 0 --query.max-samples "${RAW_MAX_SAMPLES:-10000000000}" \
    --query.timeout 10m --log.level warn >>"$W/q.log" 2>&1 &
  P2=$!; wait_up http://127.0.0.1:19190/-/ready; alive $P2
  "$B/strata" querier --web.listen-address 127.0.0.1:19193 --endpoint 127.0.0.1:19195 --endpoint 127.0.0.1:19196 \
    --log.level warn >>"$W/q2.log" 2>&1 &
  P4=$!; wait_up http://127.0.0.1:19193/-/ready; alive $P4
  # Cold first: nothing has read the blocks yet (the store gateway's block
  # cache and the results cache are empty).
  cold_warm "strata ($1), downsampled + frontend" http://127.0.0.1:19193
  echo "   $(curl -s http://127.0.0.1:19193/metrics | grep -E '^strata_querier_results_cache_(lookups_total|bytes)' | tr '\n' ' ')"
  run_queries "strata ($1), downsampled (auto, no frontend)" http://127.0.0.1:19190 "$RUNS" true
  run_queries "strata ($1), raw samples only (max_source_resolution=0s, no frontend)" http://127.0.0.1:19190 "$RUNS" true \
    --param max_source_resolution=0s
  kill $P2 $P3 $P4; wait $P2 $P3 $P4 2>/dev/null || true
}
compact "${COMPACT_FLAGS:-}"
measure "compacted with ${COMPACT_FLAGS:-defaults}"
if [ -n "${THEN_COMPACT_FLAGS:-}" ]; then
  compact "$THEN_COMPACT_FLAGS"
  measure "then compacted with $THEN_COMPACT_FLAGS"
fi
kill $P1; wait $P1 2>/dev/null || true
