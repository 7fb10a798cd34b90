#!/usr/bin/env bash
# Side-by-side remote-write ingest benchmark: Debian's Prometheus, Debian's
# VictoriaMetrics, Strata (1 ingester) and Strata (3 ingesters, RF=3), each
# fed the same data by `strata-loadgen bench write`, one after the other on
# this machine. Prints one result line per system.
#
#   bash loadgen/bench/ingest.sh [SERIES] [HISTORY] [SENDERS] [SAMPLES_PER_SERIES]
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
SERIES="${1:-10000}"; HISTORY="${2:-2h}"; SENDERS="${3:-4}"; PER="${4:-1}"
make -s binaries  # the release set `make demo` builds, so the two share one build
B="$CARGO_TARGET_DIR/release"
W="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
bench() { # name url pid...
  local name=$1 url=$2; shift 2
  local pids=(); for p in "$@"; do pids+=(--pid "$p"); done
  echo "== $name"
  "$B/strata-loadgen" bench write --url "$url" --series "$SERIES" --history "$HISTORY" --interval 15s --senders "$SENDERS" --samples-per-series "$PER" "${pids[@]}" | grep -v '^{'
}
wait_up() { for _ in $(seq 1 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "not up: $1" >&2; return 1; }
alive() { kill -0 "$1" 2>/dev/null || { echo "process $1 exited right after starting (port already in use? see its log)" >&2; exit 1; }; }
du_bytes() { du -sb "$1" | cut -f1; }

if command -v prometheus >/dev/null; then
  printf 'global:\n  scrape_interval: 15s\n' > "$W/prom.yml"
  prometheus --config.file="$W/prom.yml" --storage.tsdb.path="$W/prom" --web.listen-address=127.0.0.1:19990 \
    --web.enable-remote-write-receiver --log.level=warn >"$W/prom.log" 2>&1 &
  P=$!; wait_up http://127.0.0.1:19990/-/ready; alive $P
  bench "prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}')" http://127.0.0.1:19990/api/v1/write $P
  echo "   RSS $(($(awk '/VmRSS/{print $2}' /proc/$P/status) / 1024)) MiB, WAL+blocks $(($(du_bytes "$W/prom") / 1048576)) MiB (head not yet compacted)"
  kill $P; wait $P 2>/dev/null || true
fi
if command -v victoria-metrics >/dev/null; then
  victoria-metrics -storageDataPath="$W/vm" -httpListenAddr=127.0.0.1:19991 -loggerLevel=ERROR >"$W/vm.log" 2>&1 &
  P=$!; wait_up http://127.0.0.1:19991/health; alive $P
  bench "victoria-metrics" http://127.0.0.1:19991/api/v1/write $P
  echo "   RSS $(($(awk '/VmRSS/{print $2}' /proc/$P/status) / 1024)) MiB"
  kill $P; wait $P 2>/dev/null || true
fi
"$B/strata" ingester --raft.node-id 1 --raft.peers 1=127.0.0.1:19195 --grpc.listen-address 127.0.0.1:19195 \
  --web.listen-address 127.0.0.1:19109 --storage.path "$W/s1" --log.level warn >"$W/s1.log" 2>&1 &
P=$!; wait_up http://127.0.0.1:19109/-/ready; alive $P
bench "strata 1 ingester" http://127.0.0.1:19109/api/v1/write $P
echo "   RSS $(($(awk '/VmRSS/{print $2}' /proc/$P/status) / 1024)) MiB; $(curl -s http://127.0.0.1:19109/api/v1/status/raft)"
kill $P; wait $P 2>/dev/null || true
PEERS="1=127.0.0.1:19395,2=127.0.0.1:19495,3=127.0.0.1:19595"
PIDS=()
for i in 1 2 3; do
  "$B/strata" ingester --raft.node-id $i --raft.peers "$PEERS" --grpc.listen-address 127.0.0.1:19$((i + 2))95 \
    --web.listen-address 127.0.0.1:19$((i + 2))09 --storage.path "$W/c$i" --log.level warn >"$W/c$i.log" 2>&1 &
  PIDS+=($!)
done
wait_up http://127.0.0.1:19309/-/ready
for p in "${PIDS[@]}"; do alive "$p"; done
sleep 2
bench "strata 3 ingesters (RF=3)" http://127.0.0.1:19309/api/v1/write "${PIDS[@]}"
for i in 1 2 3; do echo "   node $i RSS $(($(awk '/VmRSS/{print $2}' /proc/${PIDS[$((i - 1))]}/status) / 1024)) MiB"; done
