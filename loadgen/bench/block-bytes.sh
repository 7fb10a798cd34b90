#!/usr/bin/env bash
# Bytes per sample of full 2 h blocks, side by side on the ingest harness's
# data (SERIES series × HISTORY at 15 s from `strata-loadgen bench write`,
# the data issue 3's orientation figures use): Debian's Prometheus (its own
# 2 h TSDB blocks: chunks + index + meta), Strata (each 2 h block's
# Parquet files: series, samples and the hourly rollup) and VictoriaMetrics (its whole data
# directory after a forced flush, divided by every sample it holds; it has
# no 2 h blocks).
#
#   bash loadgen/bench/block-bytes.sh [SERIES] [HISTORY]     (default 10000 8h)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
SERIES="${1:-10000}"; HISTORY="${2:-8h}"
command -v prometheus >/dev/null || { echo "needs Debian's prometheus (apt-get install prometheus)" >&2; exit 1; }
make -s binaries
B="$CARGO_TARGET_DIR/release"
W="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
wait_up() { for _ in $(seq 1 150); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "not up: $1" >&2; return 1; }
alive() { kill -0 "$1" 2>/dev/null || { echo "process $1 exited right after starting (port already in use? see its log)" >&2; exit 1; }; }
load() { "$B/strata-loadgen" bench write --url "$1" --series "$SERIES" --history "$HISTORY" --interval 15s --senders 4 --samples-per-series 20 | grep '^bench write'; }
# Sums "samples bytes" over full 2 h blocks: every meta.json under $1 whose
# range is 2 h; $2 = samples field path (prometheus|strata).
blocks() {
  python3 - "$1" "$2" <<'PY'
import json, os, sys
root, kind = sys.argv[1], sys.argv[2]
samples = size = n = 0
for d, _, files in os.walk(root):
    if "meta.json" not in files:
        continue
    m = json.load(open(os.path.join(d, "meta.json")))
    if m["maxTime"] - m["minTime"] < 7_140_000:  # full 2 h blocks only
        continue
    if kind == "strata":
        b = sum(os.path.getsize(os.path.join(d, f)) for f in files if f.endswith(".parquet"))
    else:
        b = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(d) for f in fs)
    samples += m["stats"]["numSamples"]; size += b; n += 1
print(f"{n} full 2 h blocks, {samples} samples, {size} bytes = {size / max(samples, 1):.3f} bytes/sample")
PY
}

printf 'global:\n  scrape_interval: 15s\n' > "$W/prom.yml"
prometheus --config.file="$W/prom.yml" --storage.tsdb.path="$W/prom" --web.listen-address=127.0.0.1:39990 \
  --web.enable-remote-write-receiver --log.level=warn >"$W/prom.log" 2>&1 &
P=$!; wait_up http://127.0.0.1:39990/-/ready; alive $P
load http://127.0.0.1:39990/api/v1/write
# The head compacts its oldest 2 h into a block once it spans 3 h (checked every minute).
for _ in $(seq 1 180); do [ "$(find "$W/prom" -name meta.json | wc -l)" -gt 0 ] && break; sleep 1; done
sleep 5
echo "prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}'): $(blocks "$W/prom" prometheus)"
kill $P; wait $P 2>/dev/null || true

if command -v victoria-metrics >/dev/null; then
  victoria-metrics -storageDataPath="$W/vm" -httpListenAddr=127.0.0.1:39991 -loggerLevel=ERROR >"$W/vm.log" 2>&1 &
  P=$!; wait_up http://127.0.0.1:39991/health; alive $P
  out=$(load http://127.0.0.1:39991/api/v1/write); echo "$out"
  curl -s http://127.0.0.1:39991/internal/force_flush >/dev/null; curl -s http://127.0.0.1:39991/internal/force_merge >/dev/null || true
  sleep 10
  ok=$(echo "$out" | sed -n 's/.* \([0-9]*\) samples acknowledged.*/\1/p')
  bytes=$(du -sb "$W/vm" | cut -f1)
  echo "victoria-metrics (whole data directory): $ok samples, $bytes bytes = $(python3 -c "print(f'{$bytes / max($ok, 1):.3f}')") bytes/sample"
  kill $P; wait $P 2>/dev/null || true
fi

"$B/strata" ingester --raft.node-id 1 --raft.peers 1=127.0.0.1:39195 --grpc.listen-address 127.0.0.1:39195 \
  --web.listen-address 127.0.0.1:39109 --storage.path "$W/s1" --objstore.path "$W/objstore" \
  --block.duration 2h --log.level warn >"$W/s1.log" 2>&1 &
P=$!; wait_up http://127.0.0.1:39109/-/ready; alive $P
load http://127.0.0.1:39109/api/v1/write
sleep 15  # elapsed ranges are cut and uploaded
echo "strata $("$B/strata" --version | awk '{print $2}'): $(blocks "$W/objstore" strata)"
kill $P; wait $P 2>/dev/null || true
