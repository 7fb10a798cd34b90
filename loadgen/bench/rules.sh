#!/usr/bin/env bash
# Rule evaluation side by side: 1 000 recording rules (20 groups × 50,
# interval 30 s; rate/sum by environment, histogram_quantile, per-instance
# rate and gauge averages over the `bench write` data set) evaluated by
# Debian's Prometheus (rule_files, its own TSDB) and by `strata ruler`
# (through the query service against one ingester, results remote-written
# back), one after the other on this machine, each loaded with the same
# SERIES series × HISTORY of 15 s samples.
#
# Reported per system, over SAMPLES readings of the rule-group metrics
# 30 s apart once every group has run at least twice:
#   * the evaluation time of all 1 000 rules: the sum over groups of the
#     last evaluation's duration (Prometheus: prometheus_rule_group_last_duration_seconds,
#     Strata: strata_ruler_rule_group_last_duration_seconds), median and max;
#   * the slowest group's duration;
#   * missed iterations (must be 0) and failed evaluations (must be 0);
#   * CPU seconds per minute of the processes doing the work (Prometheus;
#     Strata's ruler + ingester), from process_cpu_seconds_total.
#
#   bash loadgen/bench/rules.sh [SERIES] [HISTORY] [SAMPLES]
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
SERIES="${1:-10000}"; HISTORY="${2:-1h}"; SAMPLES="${3:-5}"
if [ -n "${BIN_DIR:-}" ]; then B="$BIN_DIR"  # e.g. a dev build, to try the script (not for figures)
else make -s binaries; B="$CARGO_TARGET_DIR/release"; fi  # the release set `make demo` builds
W="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
wait_up() { for _ in $(seq 1 150); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "not up: $1" >&2; return 1; }
alive() { kill -0 "$1" 2>/dev/null || { echo "process $1 exited right after starting (port already in use? see its log)" >&2; exit 1; }; }
load() { "$B/strata-loadgen" bench write --url "$1" --series "$SERIES" --history "$HISTORY" --interval 15s --senders 4 --samples-per-series 20 | grep '^bench write'; }

# The rules: 20 groups of 50, four shapes over the bench data.
python3 - "$W/rules.yml" <<'EOF'
import sys
shapes = [
    lambda i: f'sum by (environment) (rate(http_requests_total{{route="/r{i % 10}"}}[5m]))',
    lambda i: f'histogram_quantile(0.95, sum by (environment, le) (rate(http_request_duration_seconds_bucket{{route="/r{i % 2}"}}[5m])))',
    lambda i: f'sum by (instance, code) (rate(http_requests_total{{instance="host-{i % 250}:9100"}}[5m]))',
    lambda i: f'avg by (environment) (process_memory_bytes{{kind="k{i % 5}"}})',
]
out = ["groups:"]
for g in range(20):
    out += [f"  - name: bench-{g:02d}", "    interval: 30s", "    rules:"]
    for r in range(50):
        i = g * 50 + r
        out += [f"      - record: bench:rule_{i:04d}", f"        expr: '{shapes[i % 4](i)}'"]
open(sys.argv[1], "w").write("\n".join(out) + "\n")
EOF
promtool check rules "$W/rules.yml" | tail -1

# metric value summed over its series: metrics URL, name
msum() { curl -s "$1" | awk -v n="$2" '$1 ~ "^"n"({|$)" {s += $NF} END {printf "%.6f", s}'; }
mmax() { curl -s "$1" | awk -v n="$2" '$1 ~ "^"n"({|$)" {if ($NF > m) m = $NF} END {printf "%.6f", m}'; }
# report name metrics-url duration-metric missed-metric failed-metric cpu-urls...
report() {
  local name="$1" url="$2" dur="$3" missed="$4" failed="$5"; shift 5
  local cpu0=0 cpu1=0 u t0 t1 sums="" maxes=""
  for u in "$@"; do cpu0=$(echo "$cpu0 + $(msum "$u" process_cpu_seconds_total)" | bc -l); done
  t0=$(date +%s.%N)
  for k in $(seq 1 "$SAMPLES"); do
    sleep 30
    sums="$sums $(msum "$url" "$dur")"; maxes="$maxes $(mmax "$url" "$dur")"
  done
  t1=$(date +%s.%N)
  for u in "$@"; do cpu1=$(echo "$cpu1 + $(msum "$u" process_cpu_seconds_total)" | bc -l); done
  python3 - "$name" "$sums" "$maxes" "$(msum "$url" "$missed")" "$(msum "$url" "$failed")" "$cpu0" "$cpu1" "$t0" "$t1" <<'EOF'
import statistics, sys
name, sums, maxes, missed, failed, c0, c1, t0, t1 = sys.argv[1:]
s = [float(x) * 1000 for x in sums.split()]
m = [float(x) * 1000 for x in maxes.split()]
cpu_per_min = (float(c1) - float(c0)) / (float(t1) - float(t0)) * 60
print(f"{name}: 1000 rules in {statistics.median(s):.0f} ms median (max {max(s):.0f} ms) per 30 s interval; "
      f"slowest group {statistics.median(m):.0f} ms median; missed iterations {float(missed):.0f}; "
      f"failed evaluations {float(failed):.0f}; CPU {cpu_per_min:.1f} s/min")
EOF
}

if [ -z "${ONLY_STRATA:-}" ] && command -v prometheus >/dev/null; then
  printf 'global:\n  scrape_interval: 15s\n  evaluation_interval: 30s\nrule_files: [%s]\n' "$W/rules.yml" > "$W/prom.yml"
  prometheus --config.file="$W/prom.yml" --storage.tsdb.path="$W/prom" --web.listen-address=127.0.0.1:19990 \
    --web.enable-remote-write-receiver --log.level=warn >"$W/prom.log" 2>&1 &
  P=$!; wait_up http://127.0.0.1:19990/-/ready; alive $P
  load http://127.0.0.1:19990/api/v1/write
  sleep 65  # every group evaluated at least twice over the loaded data
  report "prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}')" http://127.0.0.1:19990/metrics \
    prometheus_rule_group_last_duration_seconds prometheus_rule_group_iterations_missed_total \
    prometheus_rule_evaluation_failures_total http://127.0.0.1:19990/metrics
  kill $P; wait $P 2>/dev/null || true
fi

"$B/strata" ingester --raft.node-id 1 --raft.peers 1=127.0.0.1:19195 --grpc.listen-address 127.0.0.1:19195 \
  --web.listen-address 127.0.0.1:19109 --storage.path "$W/s1" --objstore.path "$W/objstore" \
  --block.duration 2h --log.level warn >"$W/s1.log" 2>&1 &
P1=$!; wait_up http://127.0.0.1:19109/-/ready; alive $P1
load http://127.0.0.1:19109/api/v1/write
"$B/strata" ruler --rule.files "$W/rules.yml" --endpoint 127.0.0.1:19195 \
  --remote-write.url http://127.0.0.1:19109/api/v1/write --web.listen-address 127.0.0.1:19199 \
  --objstore.path "$W/objstore" --log.level warn >"$W/ruler.log" 2>&1 &
P2=$!; wait_up http://127.0.0.1:19199/-/ready; alive $P2
sleep 65
report "strata (ruler + 1 ingester)" http://127.0.0.1:19199/metrics \
  strata_ruler_rule_group_last_duration_seconds strata_ruler_rule_group_iterations_missed_total \
  strata_ruler_rule_evaluation_failures_total http://127.0.0.1:19199/metrics http://127.0.0.1:19109/metrics
kill $P1 $P2; wait $P1 $P2 2>/dev/null || true
