#!/usr/bin/env bash
# What Strata's self-instrumentation costs on the write and query paths:
# one ingester and a querier fed the same load (`strata-loadgen bench
# write`, CPU per sample from the ingester's PID) and timed with the
# dashboard queries (`strata-loadgen bench query`), in three set-ups,
# alternating, ROUNDS times (default 2):
#   off       STRATA_SELF_METRICS=off: no HTTP/gRPC/object-storage/worker
#             series recorded (the middleware still runs; tracing not exported)
#   metrics   the default: every request and call recorded, no trace export
#   traces    metrics, plus every span exported with OTLP/HTTP to a local
#             sink (OTEL_EXPORTER_OTLP_ENDPOINT; python3 answering 200)
# Then the time an ingester with SERIES active series takes to render
# /metrics (5 scrapes, median).
#
#   bash loadgen/bench/instrumentation.sh [SERIES] [HISTORY] [QUERY_RUNS]
#
# BIN_DIR=/dir runs the strata and strata-loadgen binaries in /dir without building.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
SERIES="${1:-100000}"; HISTORY="${2:-30m}"; RUNS="${3:-5}"; ROUNDS="${ROUNDS:-2}"
if [ -n "${BIN_DIR:-}" ]; then B="$BIN_DIR"; else make -s binaries; B="$CARGO_TARGET_DIR/release"; fi
W="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT

# The OTLP sink: accepts every export, keeps nothing, counts bytes.
cat >"$W/sink.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("content-length", 0)); self.rfile.read(n)
        with open(sys.argv[2], "a") as f: f.write(f"{n}\n")
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$W/sink.py" 19418 "$W/sink.log" &

wait_up() {
  for _ in $(seq 1 150); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done
  echo "not up: $1" >&2; return 1
}

run() { # name env...
  local name=$1; shift
  rm -rf "$W/s"; : >"$W/sink.log"
  env "$@" "$B/strata" ingester --raft.node-id 1 --raft.peers 1=127.0.0.1:19495 --grpc.listen-address 127.0.0.1:19495 \
    --web.listen-address 127.0.0.1:19409 --storage.path "$W/s" --objstore.path "$W/objstore" --log.level warn \
    --raft.snapshot-logs 100000000 --block.duration 24h >"$W/s.log" 2>&1 &
  local p=$!
  wait_up http://127.0.0.1:19409/-/ready
  # No results cache: every run evaluates (the cost measured is the engine's).
  env "$@" "$B/strata" querier --web.listen-address 127.0.0.1:19490 --endpoint 127.0.0.1:19495 --log.level warn \
    --query.split-interval 0s --query.results-cache.max-bytes 0 >"$W/q.log" 2>&1 &
  local q=$!
  wait_up http://127.0.0.1:19490/-/ready
  echo "== $name"
  "$B/strata-loadgen" bench write --url http://127.0.0.1:19409/api/v1/write --series "$SERIES" \
    --history "$HISTORY" --interval 15s --senders 4 --samples-per-series 1 --pid "$p" | grep -v '^{'
  "$B/strata-loadgen" bench query --url http://127.0.0.1:19490 --queries loadgen/queries/dashboard.txt \
    --range "$HISTORY" --step 60s --runs "$RUNS"
  local t=()
  for _ in 1 2 3 4 5; do
    t+=("$(curl -s -o "$W/metrics.txt" -w '%{time_total}' http://127.0.0.1:19409/metrics)")
  done
  printf '/metrics of the ingester with %s series: median %s s (%s bytes); ' "$SERIES" \
    "$(printf '%s\n' "${t[@]}" | sort -n | sed -n 3p)" "$(wc -c <"$W/metrics.txt")"
  echo "spans exported: $(wc -l <"$W/sink.log") requests, $(awk '{s+=$1} END {print s+0}' "$W/sink.log") bytes"
  kill $q $p; wait $q $p 2>/dev/null || true
}
for _ in $(seq 1 "$ROUNDS"); do
  run off STRATA_SELF_METRICS=off
  run metrics STRATA_SELF_METRICS=on
  run traces STRATA_SELF_METRICS=on OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:19418 OTEL_SERVICE_NAME=bench
done
