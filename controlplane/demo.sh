#!/usr/bin/env bash
# The demo (`make demo`): three environments (prod/dev/qa), each a sample
# API + strata-agent, remote-writing into a 3-node Raft cluster of `strata
# ingester`s that cut 5-minute Parquet blocks into ./data/objstore, served by
# `strata store`; `strata querier` answers PromQL on 127.0.0.1:9090 (the
# Prometheus HTTP API: point Grafana's Prometheus data source at it); the
# load generator runs the steady/bursty/errors mix. Data lives under ./data
# and survives a restart. Ctrl-C stops everything.
#
#   SCENARIO=prod-latency make demo    # start a latency incident on prod
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
DATA="${DATA_DIR:-./data}"
SCENARIO="${SCENARIO:-steady}"
while [ $# -gt 0 ]; do
  case "$1" in
    --scenario) SCENARIO="$2"; shift 2 ;;
    --scenario=*) SCENARIO="${1#*=}"; shift ;;
    *) echo "usage: $0 [--scenario prod-latency|qa-error-spike]" >&2; exit 2 ;;
  esac
done
case "$SCENARIO" in steady|prod-latency|qa-error-spike) ;; *) echo "unknown scenario: $SCENARIO (prod-latency|qa-error-spike)" >&2; exit 2 ;; esac
if [ ! -f controlplane/dashboard/dist/index.html ]; then
  (cd controlplane/dashboard && npm install --no-audit --no-fund --loglevel=error && npm run build)
fi
cargo build --release -p strata -p strata-agent -p sample-api -p strata-loadgen
BIN="$CARGO_TARGET_DIR/release"
mkdir -p "$DATA/logs"
pids=()
cleanup() { echo; echo "stopping"; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

PEERS=1=127.0.0.1:9095,2=127.0.0.1:9195,3=127.0.0.1:9295
for n in 1 2 3; do
  "$BIN/strata" ingester --raft.node-id $n --raft.peers $PEERS \
    --grpc.listen-address 127.0.0.1:9$((n - 1))95 --web.listen-address 127.0.0.1:9$((n - 1))09 \
    --storage.path "$DATA/ingester-$n" --objstore.path "$DATA/objstore" \
    --block.duration "${BLOCK_DURATION:-5m}" >"$DATA/logs/ingester-$n.log" 2>&1 &
  pids+=($!)
done
"$BIN/strata" store --objstore.path "$DATA/objstore" --store.sync-interval 10s \
  >"$DATA/logs/store.log" 2>&1 &
pids+=($!)
"$BIN/strata" querier --web.listen-address 127.0.0.1:9090 \
  --sql.enabled=true --objstore.path "$DATA/objstore" \
  --endpoint 127.0.0.1:9095 --endpoint 127.0.0.1:9195 --endpoint 127.0.0.1:9295 --endpoint 127.0.0.1:9096 \
  >"$DATA/logs/querier.log" 2>&1 &
pids+=($!)

i=0
for env in prod dev qa; do
  grpc=$((4317 + 10 * i)); http=$((4318 + 10 * i)); web=$((8888 + 10 * i)); api=$((8081 + i))
  "$BIN/strata-agent" --otlp.grpc-address 127.0.0.1:$grpc --otlp.http-address 127.0.0.1:$http \
    --web.listen-address 127.0.0.1:$web --remote-write.url http://127.0.0.1:9${i}09/api/v1/write \
    --label environment=$env --label data_plane_id=dp-$env-01 --queue.path "$DATA/agent-$env" \
    >"$DATA/logs/agent-$env.log" 2>&1 &
  pids+=($!)
  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$grpc OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
  OTEL_METRIC_EXPORT_INTERVAL=5000 OTEL_SERVICE_NAME=shop-api \
  OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=$env,data_plane_id=dp-$env-01 \
    "$BIN/sample-api" --web.listen-address 127.0.0.1:$api >"$DATA/logs/api-$env.log" 2>&1 &
  pids+=($!)
  i=$((i + 1))
done

prod_scenario=steady; qa_scenario=errors
[ "$SCENARIO" = prod-latency ] && prod_scenario=prod-latency
[ "$SCENARIO" = qa-error-spike ] && qa_scenario=qa-error-spike
cat > "$DATA/scenario.yml" <<YML
targets:
  - { target: "http://127.0.0.1:8081", environment: prod, rate: 50, scenario: $prod_scenario }
  - { target: "http://127.0.0.1:8082", environment: dev, rate: 20, scenario: bursty }
  - { target: "http://127.0.0.1:8083", environment: qa, rate: 10, scenario: $qa_scenario }
YML
sleep 2
cat <<MSG

Strata demo is running (data in $DATA, logs in $DATA/logs):
  dashboard + Prometheus API     http://127.0.0.1:9090   (Grafana: Prometheus data source at this URL)
  ingesters (remote write, OTLP) http://127.0.0.1:9009  :9109  :9209   (Raft status: /api/v1/status/raft)
  store gateway                  127.0.0.1:9096 (gRPC), http://127.0.0.1:9097/metrics; blocks in $DATA/objstore
  sample APIs                    http://127.0.0.1:8081 (prod)  :8082 (dev)  :8083 (qa)
  agent metrics                  http://127.0.0.1:8888/metrics (prod)  :8898 (dev)  :8908 (qa)
Try:  curl -s 'http://127.0.0.1:9090/api/v1/query' --data-urlencode \
        'query=sum by (environment) (rate(http_server_request_duration_seconds_count[1m]))'
      SQL over the blocks (the first appears after one block range, 5 m):
      curl -s http://127.0.0.1:9090/api/v1/sql --data-binary \
        'SELECT l_environment, count(*) FROM series GROUP BY 1'
Press Ctrl-C to stop.

MSG
# Time to first data: from the querier answering (servers up) to the
# dashboard's overview query returning every environment.
(
  until curl -sf -o /dev/null http://127.0.0.1:9090/-/ready; do sleep 0.2; done
  up=$(date +%s%N)
  q='count by (environment) (http_server_request_duration_seconds_count)'
  for _ in $(seq 1 600); do
    n=$(curl -s http://127.0.0.1:9090/api/v1/query --data-urlencode "query=$q" | grep -o '"environment"' | wc -l || true)
    if [ "$n" -ge 3 ]; then
      echo "first data for all 3 environments $(( ($(date +%s%N) - up) / 1000000 )) ms after the querier was up"
      break
    fi
    sleep 0.2
  done
) &
pids+=($!)
"$BIN/strata-loadgen" run --scenario-file "$DATA/scenario.yml" --duration "${DURATION:-24h}" &
pids+=($!)
wait "${pids[-1]}"
