#!/usr/bin/env bash
# Scrape throughput: strata-agent, Prometheus (agent mode) and vmagent
# scrape the same targets with the same scrape config and remote-write what
# they scrape to the same sink (VictoriaMetrics), one after the other,
# ROUNDS times (default 2), DURATION seconds each after a warm-up of three
# scrape intervals. The figures are the scraper's CPU (utime+stime of its
# PID, from /proc) per sample and samples per second per core. Samples are
# counted by the sink (vm_rows_inserted_total{type="promremotewrite"}), so a
# scraper that falls behind or drops data is not flattered.
#
# Targets: TARGETS pages of SERIES_PER_TARGET series each (a counter family
# with 4 labels and a histogram family with 11 buckets + count), text format
# 0.0.4, values changing every interval, served by one python3 process (one
# listener per target); every scraper sees identical bodies.
#
#   bash loadgen/bench/scrape.sh [TARGETS] [SERIES_PER_TARGET] [DURATION_S]
#
# Needs prometheus (Debian's: --enable-feature=agent), vmagent and
# victoria-metrics (Debian's victoria-metrics package) on PATH.
# BIN_DIR=/dir runs strata-agent from /dir instead of building it.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
TARGETS="${1:-50}"; PER="${2:-2000}"; DURATION="${3:-60}"
INTERVAL_S="${INTERVAL_S:-5}"; ROUNDS="${ROUNDS:-2}"
if [ -n "${BIN_DIR:-}" ]; then B="$BIN_DIR"; else
  cargo build --locked --release -p strata-agent; B="$CARGO_TARGET_DIR/release"
fi
for t in prometheus vmagent victoria-metrics python3 curl; do
  command -v $t >/dev/null || { echo "scrape.sh: needs $t on PATH" >&2; exit 1; }
done
W="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
BASE_PORT=19600

cat >"$W/targets.py" <<'PY'
# One process, one listener per target; each body is built once per interval.
import http.server, sys, threading, time
base, n, per, interval = (int(a) for a in sys.argv[1:5])
n_hist = per // 20
n_counter = per - n_hist * 12
cache = {}
lock = threading.Lock()
def body(target):
    tick = int(time.time()) // interval
    with lock:
        hit = cache.get(target)
        if hit and hit[0] == tick:
            return hit[1]
    out = ["# HELP bench_requests_total Requests.", "# TYPE bench_requests_total counter"]
    for i in range(n_counter):
        out.append(f'bench_requests_total{{route="/r{i % 50}",code="{200 + i % 5}",pod="p{i % 7}",idx="{i}"}} {tick * (i % 13 + 1)}')
    out += ["# HELP bench_latency_seconds Latency.", "# TYPE bench_latency_seconds histogram"]
    for h in range(n_hist):
        c = 0
        for le in ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"):
            c += tick * (h % 3 + 1)
            out.append(f'bench_latency_seconds_bucket{{h="{h}",le="{le}"}} {c}')
        out.append(f'bench_latency_seconds_count{{h="{h}"}} {c}')
    data = ("\n".join(out) + "\n").encode()
    with lock:
        cache[target] = (tick, data)
    return data
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        data = body(self.server.server_address[1])
        self.send_response(200)
        self.send_header("content-type", "text/plain; version=0.0.4")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass
for p in range(base + 1, base + n + 1):
    s = http.server.ThreadingHTTPServer(("127.0.0.1", p), H)
    threading.Thread(target=s.serve_forever, daemon=True).start()
threading.Event().wait()
PY
python3 "$W/targets.py" "$BASE_PORT" "$TARGETS" "$PER" "$INTERVAL_S" &

targets=""
for i in $(seq 1 "$TARGETS"); do targets="$targets'127.0.0.1:$((BASE_PORT + i))', "; done
cat >"$W/scrape.yml" <<EOF
global:
  scrape_interval: ${INTERVAL_S}s
  scrape_timeout: $((INTERVAL_S - 1))s
scrape_configs:
  - job_name: bench
    static_configs:
      - targets: [${targets%, }]
EOF
# Prometheus in agent mode reads remote_write from its own file.
cp "$W/scrape.yml" "$W/prometheus.yml"
cat >>"$W/prometheus.yml" <<EOF
remote_write:
  - url: http://127.0.0.1:19428/api/v1/write
EOF

victoria-metrics -storageDataPath "$W/vm" -httpListenAddr 127.0.0.1:19428 -retentionPeriod 1d \
  -loggerLevel ERROR >"$W/vm.log" 2>&1 &

wait_up() {
  for _ in $(seq 1 150); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done
  echo "not up: $1" >&2; return 1
}
wait_up http://127.0.0.1:19428/health
wait_up "http://127.0.0.1:$((BASE_PORT + 1))/metrics"

rows() {
  curl -s http://127.0.0.1:19428/metrics |
    awk '/^vm_rows_inserted_total\{type="promremotewrite"\}/ {print $2; f=1} END {if (!f) print 0}'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

measure() { # name pid
  local name=$1 pid=$2
  sleep $((INTERVAL_S * 3))
  local r0 c0 r1 c1
  r0=$(rows); c0=$(cpu_ticks "$pid")
  sleep "$DURATION"
  r1=$(rows); c1=$(cpu_ticks "$pid")
  awk -v n="$name" -v r="$((r1 - r0))" -v c="$((c1 - c0))" -v hz="$HZ" -v d="$DURATION" \
    -v rss="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")" 'BEGIN {
      cpu = c / hz
      printf "%-13s %9.0f samples/s shipped  CPU %6.2f s over %ss = %5.1f %% of a core  %6.3f µs/sample  %9.0f samples/s per core  RSS %4.0f MiB\n",
        n, r / d, cpu, d, 100 * cpu / d, (r > 0 ? 1e6 * cpu / r : 0), (cpu > 0 ? r / cpu : 0), rss / 1024 }'
}

echo "scrape: $TARGETS targets × $PER series every ${INTERVAL_S}s ($((TARGETS * PER / INTERVAL_S)) samples/s offered), ${DURATION}s per run"
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round"
  rm -rf "$W/agent"
  "$B/strata-agent" --scrape.config-file "$W/scrape.yml" \
    --remote-write.url http://127.0.0.1:19428/api/v1/write --queue.path "$W/agent" \
    --otlp.grpc-address 127.0.0.1:19417 --otlp.http-address 127.0.0.1:19418 \
    --web.listen-address 127.0.0.1:19488 --label environment=bench --self-monitoring.interval 0s \
    --log.level warn >"$W/agent.log" 2>&1 &
  p=$!; wait_up http://127.0.0.1:19488/-/ready
  measure strata-agent $p; kill $p; wait $p 2>/dev/null || true

  rm -rf "$W/prom"
  prometheus --enable-feature=agent --config.file "$W/prometheus.yml" --storage.agent.path "$W/prom" \
    --web.listen-address 127.0.0.1:19490 --log.level warn >"$W/prom.log" 2>&1 &
  p=$!; wait_up http://127.0.0.1:19490/-/ready
  measure prometheus-agent $p; kill $p; wait $p 2>/dev/null || true

  rm -rf "$W/vmagent"
  vmagent -promscrape.config "$W/scrape.yml" -remoteWrite.url http://127.0.0.1:19428/api/v1/write \
    -remoteWrite.tmpDataPath "$W/vmagent" -httpListenAddr 127.0.0.1:19429 -loggerLevel ERROR \
    >"$W/vmagent.log" 2>&1 &
  p=$!; wait_up http://127.0.0.1:19429/health
  measure vmagent $p; kill $p; wait $p 2>/dev/null || true
done
