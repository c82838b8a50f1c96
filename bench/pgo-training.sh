#!/usr/bin/env bash
# The workload a profile-guided build of remora learns from (scripts/release.sh): an
# instrumented binary runs each configuration below in turn, under load, and writes the counts
# of what it executed to LLVM_PROFILE_FILE when it exits. What runs here is what the optimizer
# lays out and inlines as hot; what does not run is laid out as cold (and may run a little
# slower than in a plain build), so the paths a sidecar serves at rate are here:
#
#   1. HTTP/1.1 keep-alive, no policy (bench/run.sh's `remora`), 10 clients and 1
#   2. HTTP/1.1 keep-alive through every layer (bench/full-stack.yaml)
#   3. h2c on both sides (bench/h2c.sh's path), 10 connections × 10 streams
#   4. sidecar to sidecar over mesh mTLS: the outbound listener sends each request over mTLS
#      (HTTP/2, by ALPN) to the inbound listener of the same process, which serves it to the
#      origin; certificates with SPIFFE IDs made by openssl for the run
#   5. request bodies: POSTs of 4 KiB through every layer (HTTP/1.1; the retry layer keeps a
#      copy of each body) and over h2c
#   6. two worker threads (tokio's multi-thread scheduler), every layer on
#
# Not trained (yet): gRPC trailers, the transparent listeners, opaque TCP, TLS origination
# (`tls.mode: simple`).
#
#   bench/pgo-training.sh path/to/instrumented/remora
#
# Environment (defaults): SECONDS_EACH=6 (s of load for each configuration). Needs the Debian
# packages haproxy (the origin), wrk, nghttp2-client (h2load), openssl, curl, util-linux
# (taskset), python3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_EACH=${SECONDS_EACH:-6}
LOG_TAG=pgo-training
TMP_PREFIX=remora-pgo-training
REMORA=${1:?usage: bench/pgo-training.sh path/to/instrumented/remora}
set --
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

for tool in haproxy wrk h2load openssl curl taskset python3; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install haproxy wrk nghttp2-client openssl curl util-linux python3)"
done
require_integers SECONDS_EACH

read -r ORIGIN_PORT LISTEN_PORT SECOND_PORT ADMIN_PORT INBOUND_PORT <<<"$(free_ports 5)"
start_origin
export BENCH_ORIGIN=127.0.0.1:$ORIGIN_PORT BENCH_LISTEN=127.0.0.1:$LISTEN_PORT \
  BENCH_SECOND_LISTEN=127.0.0.1:$SECOND_PORT BENCH_ADMIN=127.0.0.1:$ADMIN_PORT \
  BENCH_WORKER_THREADS=1
URL=http://127.0.0.1:$LISTEN_PORT/

no_policy_config "$LISTEN_PORT" "$ADMIN_PORT" 1 >"$TMP/http1.yaml"
sed 's/^    protocol: http$/    protocol: http2/' "$TMP/http1.yaml" >"$TMP/h2c.yaml"

# A CA and one leaf for `spiffe://train.local/ns/default/dc/dc1/svc/train`: the process is
# both the calling sidecar and the called one.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=training-ca \
  -keyout "$TMP/ca.key" -out "$TMP/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=train \
  -keyout "$TMP/leaf.key" -out "$TMP/leaf.csr" 2>/dev/null
printf 'subjectAltName=URI:spiffe://train.local/ns/default/dc/dc1/svc/train\n' >"$TMP/leaf.ext"
openssl x509 -req -in "$TMP/leaf.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/ca.key" -CAcreateserial \
  -days 1 -extfile "$TMP/leaf.ext" -out "$TMP/leaf.pem" 2>/dev/null
cat >"$TMP/mesh.yaml" <<EOF
service: { name: train, address: 127.0.0.1, port: $ORIGIN_PORT, protocol: http }
inbound: { listen: 127.0.0.1:$INBOUND_PORT }
tls: { cert: $TMP/leaf.pem, key: $TMP/leaf.key, ca: $TMP/ca.pem }
upstreams:
  - name: train
    listen: 127.0.0.1:$LISTEN_PORT
    protocol: http
    discovery: { static: [127.0.0.1:$INBOUND_PORT] }
    tls: { enabled: true }
admin: { listen: 127.0.0.1:$ADMIN_PORT }
logging: { access_log: false }
EOF

# A 4 KiB POST, for wrk; h2load sends $TMP/body.
head -c 4096 /dev/zero | tr '\0' x >"$TMP/body"
cat >"$TMP/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = string.rep("x", 4096)
wrk.headers["Content-Type"] = "application/octet-stream"
EOF

# train NAME CONFIG [LOAD ARGS...]: runs the instrumented remora on CONFIG under load (wrk, or
# h2load for a name starting with h2c, each given LOAD ARGS too), then stops it (SIGTERM: it
# exits normally, which is when the profile is written).
train() { # name config [load args...]
  local name=$1 config=$2 pid
  shift 2
  log "$name: ${SECONDS_EACH}s of load"
  "$REMORA" run --config "$config" >"$TMP/$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  if [[ $name == h2c* ]]; then
    READY_H2C=1 wait_ready "$name" "$URL" "$pid" "$TMP/$name.log"
    h2load -c10 -m10 -D "$SECONDS_EACH" "$@" "$URL" >"$TMP/h2load.txt"
    grep -qE '^requests: .* [1-9][0-9]* succeeded, 0 failed' "$TMP/h2load.txt" ||
      die "$name: h2load did not succeed: $(grep '^requests:' "$TMP/h2load.txt")"
  else
    wait_ready "$name" "$URL" "$pid" "$TMP/$name.log"
    wrk -t1 -c10 -d"${SECONDS_EACH}s" "$@" "$URL" >"$TMP/wrk.txt"
    wrk -t1 -c1 -d2s "$@" "$URL" >>"$TMP/wrk.txt"
    ! grep -qE 'Non-2xx|Socket errors' "$TMP/wrk.txt" || die "$name: wrk saw errors: $(cat "$TMP/wrk.txt")"
  fi
  kill -TERM "$pid"
  wait "$pid" || die "$name: remora exited with an error: $(tail -n 5 "$TMP/$name.log")"
  unset 'PIDS[-1]' # gone: cleanup must not signal a pid reused since
}

train http1 "$TMP/http1.yaml"
train full-stack "$ROOT/bench/full-stack.yaml"
train h2c "$TMP/h2c.yaml"
train mesh-mtls "$TMP/mesh.yaml"
train full-stack-post "$ROOT/bench/full-stack.yaml" -s "$TMP/post.lua"
train h2c-post "$TMP/h2c.yaml" -d "$TMP/body"
BENCH_WORKER_THREADS=2 train full-stack-two-workers "$ROOT/bench/full-stack.yaml"
log "done"
