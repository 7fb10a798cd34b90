#!/usr/bin/env bash
# What authentication costs on the write path: one Strata ingester fed the
# same load (`strata-loadgen bench write`) three times, alternating:
#   none    no --web.config.file
#   bearer  --web.config.file, every request with a bearer token (one SHA-256 per request)
#   basic   --web.config.file, every request with basic auth (bcrypt once, then the cache)
# ROUNDS times each (default 2), printing samples/s, latency and CPU per sample.
#
#   bash loadgen/bench/auth.sh [SERIES] [HISTORY] [SAMPLES_PER_SERIES]
#
# BIN_DIR=/dir runs the strata and strata-loadgen binaries in /dir without building.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
SERIES="${1:-100000}"; HISTORY="${2:-1h}"; SPS="${3:-1}"; ROUNDS="${ROUNDS:-2}"
if [ -n "${BIN_DIR:-}" ]; then B="$BIN_DIR"; else make -s binaries; B="$CARGO_TARGET_DIR/release"; fi
W="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
wait_up() { for _ in $(seq 1 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "not up: $1" >&2; return 1; }

TOKEN=bench-token-0123456789
# A bcrypt hash at cost 10 (python3 -m pip install bcrypt, or apache2-utils' htpasswd).
HASH=$(python3 -c 'import bcrypt; print(bcrypt.hashpw(b"bench-pw", bcrypt.gensalt(10)).decode())' 2>/dev/null \
  || htpasswd -nbBC 10 "" bench-pw 2>/dev/null | tr -d ':\n' || true)
[ -n "$HASH" ] || { echo "need python3's bcrypt module or htpasswd to hash the benchmark password" >&2; exit 1; }
cat >"$W/web.yml" <<EOF
basic_auth_users:
  bench: '$HASH'
tenants:
  - { user: bench, tenant: bench, roles: [write] }
  - { token_sha256: $(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1), tenant: bench, roles: [write] }
EOF
BASIC=$(printf %s "bench:bench-pw" | base64 -w0)

run() { # name header-or-empty extra-flags...
  local name=$1 header=$2; shift 2
  rm -rf "$W/s"
  "$B/strata" ingester --raft.node-id 1 --raft.peers 1=127.0.0.1:19195 --grpc.listen-address 127.0.0.1:19195 \
    --web.listen-address 127.0.0.1:19109 --storage.path "$W/s" --objstore.path "$W/objstore" --log.level warn \
    --raft.snapshot-logs 100000000 --block.duration 24h "$@" >"$W/s.log" 2>&1 &
  local p=$!
  wait_up http://127.0.0.1:19109/-/ready
  echo "== $name"
  local hdr=(); [ -n "$header" ] && hdr=(--header "$header")
  "$B/strata-loadgen" bench write --url http://127.0.0.1:19109/api/v1/write --series "$SERIES" --history "$HISTORY" \
    --interval 15s --senders 4 --samples-per-series "$SPS" --pid "$p" "${hdr[@]}" | grep -v '^{'
  kill $p; wait $p 2>/dev/null || true
}
for _ in $(seq 1 "$ROUNDS"); do
  run none ""
  run bearer "Authorization=Bearer $TOKEN" --web.config.file "$W/web.yml"
  run basic "Authorization=Basic $BASIC" --web.config.file "$W/web.yml"
done
