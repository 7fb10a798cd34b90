#!/usr/bin/env bash
# What TLS plus authentication costs, on the write path and on the query
# path: one Strata ingester and a querier, fed the same load
# (`strata-loadgen bench write`) and then timed with the dashboard queries
# (`strata-loadgen bench query`), in three set-ups, alternating:
#   plain        no web config, plaintext HTTP and gRPC
#   tls-bearer   HTTPS on both (web config with tls_server_config), mutual TLS
#                between querier and ingester (--grpc.tls-* / --grpc-client.tls-*),
#                writes with a bearer token, queries with basic auth
#   tls-basic    the same, writes with basic auth too
# ROUNDS times each (default 2). Certificates come from openssl (a CA and a
# leaf for 127.0.0.1, ECDSA P-256); the bcrypt hash (cost 10) from python3's
# bcrypt module or htpasswd.
#
#   bash loadgen/bench/tls.sh [SERIES] [HISTORY] [QUERY_RUNS]
#
# BIN_DIR=/dir runs the strata and strata-loadgen binaries in /dir without building.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
SERIES="${1:-100000}"; HISTORY="${2:-1h}"; RUNS="${3:-5}"; ROUNDS="${ROUNDS:-2}"
if [ -n "${BIN_DIR:-}" ]; then B="$BIN_DIR"; else make -s binaries; B="$CARGO_TARGET_DIR/release"; fi
W="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT

# Certificates: a CA and one leaf for 127.0.0.1 (served by both, and the
# querier's client certificate towards the ingester).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=bench-ca -days 2 \
  -keyout "$W/ca.key" -out "$W/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=bench -keyout "$W/tls.key" \
  -out "$W/tls.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$W/ext"
openssl x509 -req -in "$W/tls.csr" -CA "$W/ca.crt" -CAkey "$W/ca.key" -CAcreateserial -days 2 -extfile "$W/ext" \
  -out "$W/tls.crt" 2>/dev/null

TOKEN=bench-token-0123456789
HASH=$(python3 -c 'import bcrypt; print(bcrypt.hashpw(b"bench-pw", bcrypt.gensalt(10)).decode())' 2>/dev/null \
  || htpasswd -nbBC 10 "" bench-pw 2>/dev/null | tr -d ':\n' || true)
[ -n "$HASH" ] || { echo "need python3's bcrypt module or htpasswd to hash the benchmark password" >&2; exit 1; }
cat >"$W/web.yml" <<EOF
tls_server_config:
  cert_file: $W/tls.crt
  key_file: $W/tls.key
basic_auth_users:
  bench: '$HASH'
tenants:
  - { user: bench, tenant: bench, roles: [read, write] }
  - { token_sha256: $(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1), tenant: bench, roles: [write] }
EOF
BASIC=$(printf %s "bench:bench-pw" | base64 -w0)
GRPC_SERVER=(--grpc.tls-cert-file "$W/tls.crt" --grpc.tls-key-file "$W/tls.key" --grpc.tls-client-ca-file "$W/ca.crt")
GRPC_CLIENT=(--grpc-client.tls-ca-file "$W/ca.crt" --grpc-client.tls-cert-file "$W/tls.crt" --grpc-client.tls-key-file "$W/tls.key")

wait_up() { # url [curl options]
  local url=$1; shift
  for _ in $(seq 1 150); do curl -sf "$@" "$url" >/dev/null && return 0; sleep 0.2; done
  echo "not up: $url" >&2; return 1
}

run() { # name secured(0/1) write-header
  local name=$1 secured=$2 wheader=$3
  rm -rf "$W/s"
  local scheme=http iflags=() qflags=() curl_opts=() qheader=() ca=()
  if [ "$secured" = 1 ]; then
    scheme=https
    iflags=(--web.config.file "$W/web.yml" "${GRPC_SERVER[@]}")
    qflags=(--web.config.file "$W/web.yml" "${GRPC_CLIENT[@]}")
    curl_opts=(--cacert "$W/ca.crt")
    qheader=(--header "Authorization=Basic $BASIC")
    ca=(--ca-file "$W/ca.crt")
  fi
  "$B/strata" ingester --raft.node-id 1 --raft.peers 1=127.0.0.1:19195 --grpc.listen-address 127.0.0.1:19195 \
    --web.listen-address 127.0.0.1:19109 --storage.path "$W/s" --objstore.path "$W/objstore" --log.level warn \
    --raft.snapshot-logs 100000000 --block.duration 24h "${iflags[@]}" >"$W/s.log" 2>&1 &
  local p=$!
  wait_up "$scheme://127.0.0.1:19109/-/ready" "${curl_opts[@]}"
  # No results cache: every run evaluates (the cost measured is TLS's and auth's).
  "$B/strata" querier --web.listen-address 127.0.0.1:19190 --endpoint 127.0.0.1:19195 --log.level warn \
    --query.split-interval 0s --query.results-cache.max-bytes 0 "${qflags[@]}" >"$W/q.log" 2>&1 &
  local q=$!
  wait_up "$scheme://127.0.0.1:19190/-/ready" "${curl_opts[@]}"
  echo "== $name"
  local hdr=(); [ -n "$wheader" ] && hdr=(--header "$wheader")
  "$B/strata-loadgen" bench write --url "$scheme://127.0.0.1:19109/api/v1/write" --series "$SERIES" \
    --history "$HISTORY" --interval 15s --senders 4 --samples-per-series 1 --pid "$p" "${hdr[@]}" "${ca[@]}" \
    | grep -v '^{'
  "$B/strata-loadgen" bench query --url "$scheme://127.0.0.1:19190" --queries loadgen/queries/dashboard.txt \
    --range "$HISTORY" --step 60s --runs "$RUNS" "${qheader[@]}" "${ca[@]}"
  kill $q $p; wait $q $p 2>/dev/null || true
}
for _ in $(seq 1 "$ROUNDS"); do
  run plain 0 ""
  run tls-bearer 1 "Authorization=Bearer $TOKEN"
  run tls-basic 1 "Authorization=Basic $BASIC"
done
