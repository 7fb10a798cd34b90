#!/usr/bin/env bash
# Storage size per sample, Strata's Parquet blocks vs Prometheus' TSDB, on
# the same real OpenTelemetry data: three sample APIs (prod/dev/qa, driven by
# strata-loadgen) export OTLP to their strata-agents, and each agent
# remote-writes every batch to both Debian's Prometheus and a Strata
# ingester. After DURATION the Strata head is flushed into a block and
# Prometheus writes its head into a block (admin snapshot API); both are
# then measured on disk and divided by the samples they hold.
#
#   bash loadgen/bench/bytes-per-sample.sh [DURATION]      (default 10m)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
DURATION="${1:-10m}"
command -v prometheus >/dev/null || { echo "needs Debian's prometheus (apt-get install prometheus)" >&2; exit 1; }
make -s binaries  # the release set `make demo` builds, so the two share one build
B="$CARGO_TARGET_DIR/release"
W="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
wait_up() { for _ in $(seq 1 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "not up: $1" >&2; return 1; }

printf 'global:\n  scrape_interval: 15s\n' > "$W/prom.yml"
prometheus --config.file="$W/prom.yml" --storage.tsdb.path="$W/prom" --web.listen-address=127.0.0.1:29990 \
  --web.enable-remote-write-receiver --web.enable-admin-api --log.level=warn >"$W/prom.log" 2>&1 &
wait_up http://127.0.0.1:29990/-/ready
"$B/strata" ingester --raft.node-id 1 --raft.peers 1=127.0.0.1:29195 --grpc.listen-address 127.0.0.1:29195 \
  --web.listen-address 127.0.0.1:29109 --storage.path "$W/strata" --objstore.path "$W/objstore" \
  --log.level warn >"$W/strata.log" 2>&1 &
wait_up http://127.0.0.1:29109/-/ready
i=0
for env in prod dev qa; do
  grpc=$((29317 + 10 * i)); api=$((29081 + i))
  "$B/strata-agent" --otlp.grpc-address 127.0.0.1:$grpc --otlp.http-address 127.0.0.1:$((grpc + 1)) \
    --web.listen-address 127.0.0.1:$((29888 + 10 * i)) \
    --remote-write.url http://127.0.0.1:29109/api/v1/write,http://127.0.0.1:29990/api/v1/write \
    --remote-write.protocol v1 \
    --label environment=$env --label data_plane_id=dp-$env-01 --queue.path "$W/agent-$env" >"$W/agent-$env.log" 2>&1 &
  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$grpc OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_METRIC_EXPORT_INTERVAL=5000 \
  OTEL_SERVICE_NAME=shop-api OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=$env,data_plane_id=dp-$env-01 \
    "$B/sample-api" --web.listen-address 127.0.0.1:$api >"$W/api-$env.log" 2>&1 &
  i=$((i + 1))
done
cat > "$W/scenario.yml" <<YML
targets:
  - { target: "http://127.0.0.1:29081", environment: prod, rate: 50, scenario: steady }
  - { target: "http://127.0.0.1:29082", environment: dev, rate: 20, scenario: bursty }
  - { target: "http://127.0.0.1:29083", environment: qa, rate: 10, scenario: errors }
YML
sleep 2
echo "running the three data planes for $DURATION ..."
"$B/strata-loadgen" run --scenario-file "$W/scenario.yml" --duration "$DURATION" >"$W/loadgen.log" 2>&1
sleep 10 # the last export (5 s) and the agents' last batches

# Prometheus does not scrape itself here: read its own counters from /metrics.
prom_metric() { curl -s http://127.0.0.1:29990/metrics | awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2} END {printf "%d", s}'; }
prom_samples=$(prom_metric prometheus_tsdb_head_samples_appended_total)
prom_series=$(prom_metric prometheus_tsdb_head_series)
snap_answer=$(curl -s -XPOST http://127.0.0.1:29990/api/v1/admin/tsdb/snapshot)
echo "prometheus snapshot: $snap_answer"
snap=$(echo "$snap_answer" | grep -o '"name":"[^"]*"' | cut -d'"' -f4 || true)
prom_bytes=$(find "$W/prom/snapshots/$snap" -type f \( -name '0*' -o -name index \) -printf '%s\n' | awk '{s+=$1} END {print s}')

echo "strata flush: $(curl -s -XPOST http://127.0.0.1:29109/api/v1/admin/flush)"
meta=$(find "$W/objstore" -name meta.json)
strata_samples=$(cat $meta | grep -o '"numSamples": *[0-9]*' | grep -o '[0-9]*$' | awk '{s+=$1} END {print s}')
strata_series=$(cat $meta | grep -o '"numSeries": *[0-9]*' | grep -o '[0-9]*$' | awk '{s+=$1} END {print s}')
strata_bytes=$(find "$W/objstore" -name '*.parquet' -printf '%s\n' | awk '{s+=$1} END {print s}')

echo "prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}'): $prom_samples samples in $prom_series series, TSDB block (chunks + index) $prom_bytes bytes"
echo "strata: $strata_samples samples in $strata_series series, Parquet block (series + samples) $strata_bytes bytes"
awk -v pb="$prom_bytes" -v ps="$prom_samples" -v sb="$strata_bytes" -v ss="$strata_samples" 'BEGIN {
  printf "bytes/sample: prometheus %.3f, strata %.3f, strata/prometheus %.2f\n", pb / ps, sb / ss, (sb / ss) / (pb / ps) }'
