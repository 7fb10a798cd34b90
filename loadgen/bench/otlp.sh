#!/usr/bin/env bash
# OTLP → remote write throughput of strata-agent, end to end: `strata-loadgen
# bench otlp` sends OTLP/HTTP to an agent (fsync: always) which remote-writes
# to a receiver on this machine; a run ends when the agent has sent every
# point and the receiver acknowledged it. Receivers, one after the other:
#   sink             strata-loadgen bench sink (decodes every request, stores
#                    nothing): the agent's own limit
#   victoria-metrics Debian's VictoriaMetrics
#   prometheus       Debian's Prometheus
# All processes share this machine's cores. Prints every run and the median.
#
#   bash loadgen/bench/otlp.sh [RUNS] [SERIES] [STEPS] [RECEIVERS...]
#   NO_BUILD=1 skips `make binaries`.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
RUNS="${1:-5}"; SERIES="${2:-60000}"; STEPS="${3:-60}"; shift $(( $# < 3 ? $# : 3 ))
RECEIVERS=("$@"); [ ${#RECEIVERS[@]} -gt 0 ] || RECEIVERS=(sink victoria-metrics prometheus)
[ -n "${NO_BUILD:-}" ] || make -s binaries
B="$CARGO_TARGET_DIR/release"
W="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
wait_up() { for _ in $(seq 1 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "not up: $1" >&2; return 1; }
cpu_s() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"; }

start_receiver() { # name → sets RPID, URL
  case "$1" in
    sink)
      "$B/strata-loadgen" bench sink --listen 127.0.0.1:19291 >"$W/recv.log" 2>&1 &
      RPID=$!; URL=http://127.0.0.1:19291/api/v1/write; wait_up http://127.0.0.1:19291/metrics ;;
    victoria-metrics)
      victoria-metrics -storageDataPath="$W/data" -httpListenAddr=127.0.0.1:19291 -loggerLevel=ERROR >"$W/recv.log" 2>&1 &
      RPID=$!; URL=http://127.0.0.1:19291/api/v1/write; wait_up http://127.0.0.1:19291/health ;;
    prometheus)
      printf 'global:\n  scrape_interval: 15s\n' >"$W/prom.yml"
      prometheus --config.file="$W/prom.yml" --storage.tsdb.path="$W/data" --web.listen-address=127.0.0.1:19291 \
        --web.enable-remote-write-receiver --log.level=warn >"$W/recv.log" 2>&1 &
      RPID=$!; URL=http://127.0.0.1:19291/api/v1/write; wait_up http://127.0.0.1:19291/-/ready ;;
    *) echo "unknown receiver $1" >&2; exit 2 ;;
  esac
}

for recv in "${RECEIVERS[@]}"; do
  command -v "$recv" >/dev/null || [ "$recv" = sink ] || { echo "== $recv: not installed, skipped"; continue; }
  echo "== $recv ($SERIES series × $STEPS steps, 1000 points/request, 4 senders)"
  rates=()
  for run in $(seq 1 "$RUNS"); do
    rm -rf "$W/data" "$W/q"
    start_receiver "$recv"
    "$B/strata-agent" --remote-write.url "$URL" --queue.path "$W/q" --otlp.http-address 127.0.0.1:19318 \
      --otlp.grpc-address 127.0.0.1:19317 --web.listen-address 127.0.0.1:19288 >"$W/agent.log" 2>&1 &
    APID=$!; wait_up http://127.0.0.1:19288/-/ready
    out=$("$B/strata-loadgen" bench otlp --url http://127.0.0.1:19318/v1/metrics --series "$SERIES" --steps "$STEPS" \
      --points-per-request 1000 --senders 4 --agent-metrics http://127.0.0.1:19288/metrics)
    rate=$(echo "$out" | sed -n 's/.*end to end.* = \([0-9]*\) points\/s.*/\1/p')
    points=$((SERIES * STEPS))
    echo "   run $run: $rate points/s end to end; agent $(cpu_s $APID) CPU-s ($(awk -v c="$(cpu_s $APID)" -v n=$points 'BEGIN{printf "%.2f", c * 1e6 / n}') µs/point), peak RSS $(($(awk '/VmHWM/{print $2}' /proc/$APID/status) / 1024)) MiB; receiver $(cpu_s $RPID) CPU-s"
    rates+=("$rate")
    kill $APID $RPID; wait $APID $RPID 2>/dev/null || true
  done
  echo "   median: $(printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}') points/s"
done
