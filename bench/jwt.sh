#!/usr/bin/env bash
# CPU per request of a JWT-validated inbound request (RS256 and ES256) next to the plain
# one, with and without the verified-token cache. Prints a markdown table on stdout
# (progress on stderr). See bench/README.md, "JWT".
#
#   bench/jwt.sh
#
# Environment (defaults): CONNS=50, DURATION=5 (s per measured run), WARMUP=2 (s),
# ROUNDS=3 (targets round-robin, median reported), SERVER_CPUS=0 (origin + remora),
# WRK_CPUS=1, REMORA_BIN=<repo>/target/release-fast/remora (built if missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONNS=${CONNS:-50}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
SERVER_CPUS=${SERVER_CPUS:-0}
WRK_CPUS=${WRK_CPUS:-1}
REMORA_BIN=${REMORA_BIN:-$ROOT/target/release-fast/remora}

LOG_TAG=bench-jwt
TMP_PREFIX=remora-bench-jwt
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

for tool in wrk haproxy taskset curl python3; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install wrk haproxy util-linux curl python3)"
done
PYTHON=/usr/bin/python3
$PYTHON -c "import jwt, cryptography" 2>/dev/null || die "apt-get install python3-jwt python3-cryptography"
require_integers CONNS DURATION WARMUP ROUNDS
if [[ ! -x "$REMORA_BIN" ]]; then
  log "building remora (cargo build --profile release-fast)"
  (cd "$ROOT" && cargo build --profile release-fast >&2)
fi

# Keys and tokens made by PyJWT (tests/fixtures/jwt_tokens.py), valid for an hour.
TOKENS=$ROOT/tests/fixtures/jwt_tokens.py
$PYTHON "$TOKENS" keys "$TMP" rsa ec
python3 - "$TMP" <<'EOF'
import json, sys
keys = [json.load(open(f"{sys.argv[1]}/jwks-{n}.json"))["keys"][0] for n in ("rsa", "ec")]
json.dump({"keys": keys}, open(f"{sys.argv[1]}/jwks.json", "w"))
EOF
claims='"claims": {"iss": "https://issuer.bench", "aud": "api", "sub": "alice", "exp": "now+3600"}'
mapfile -t MADE < <(printf '%s\n' \
  "{\"key\": \"rsa\", \"alg\": \"RS256\", \"kid\": \"rsa\", $claims}" \
  "{\"key\": \"ec\", \"alg\": \"ES256\", \"kid\": \"ec\", $claims}" |
  $PYTHON "$TOKENS" sign "$TMP")
RS256=${MADE[0]:-} ES256=${MADE[1]:-}
[[ -n "$RS256" && -n "$ES256" ]] || die "no tokens made"

# Targets: NAME -> its token (none for plain) and the provider's cache_size (- : no jwt).
TARGETS=(plain rs256 es256 rs256-nocache es256-nocache)
declare -A TOKEN=([plain]="" [rs256]=$RS256 [es256]=$ES256 [rs256-nocache]=$RS256 [es256-nocache]=$ES256)
declare -A CACHE=([plain]=- [rs256]=1000 [es256]=1000 [rs256-nocache]=0 [es256-nocache]=0)
read -r ORIGIN_PORT REST <<<"$(free_ports $((1 + 2 * ${#TARGETS[@]})))"
read -r -a PORTS <<<"$REST"

start_origin

declare -A PORT PID USREQ RPS
i=0
for name in "${TARGETS[@]}"; do
  PORT[$name]=${PORTS[$i]}
  admin=${PORTS[$((i + 1))]}
  i=$((i + 2))
  {
    echo "service: { name: app, port: $ORIGIN_PORT }"
    echo "inbound:"
    echo "  listen: 127.0.0.1:${PORT[$name]}"
    if [[ "${CACHE[$name]}" != - ]]; then
      cat <<EOF
  jwt:
    required: true
    providers:
      - name: bench
        issuer: https://issuer.bench
        audiences: [api]
        jwks: { file: $TMP/jwks.json }
        claims_to_headers: { sub: x-user }
        cache_size: ${CACHE[$name]}
EOF
    fi
    echo "admin: { listen: 127.0.0.1:$admin }"
    echo "runtime: { worker_threads: 1 }"
    echo "logging: { level: warn, access_log: false }"
  } >"$TMP/$name.yaml"
  taskset -c "$SERVER_CPUS" "$REMORA_BIN" run --config "$TMP/$name.yaml" >"$TMP/$name.log" 2>&1 &
  PID[$name]=$!
  PIDS+=("$!")
  wait_ready "$name" "http://127.0.0.1:$admin/ready" "${PID[$name]}" "$TMP/$name.log"
done

# run NAME SECONDS: wrk against NAME with its token; fails on any answer but 2xx.
run() {
  local name=$1 seconds=$2 header=()
  [[ -z "${TOKEN[$name]}" ]] || header=(-H "Authorization: Bearer ${TOKEN[$name]}")
  taskset -c "$WRK_CPUS" wrk -t1 -c"$CONNS" -d"${seconds}s" "${header[@]}" \
    "http://127.0.0.1:${PORT[$name]}/" >"$TMP/wrk.txt"
  if grep -qE 'Non-2xx|Socket errors' "$TMP/wrk.txt"; then
    cat "$TMP/wrk.txt" >&2
    die "$name: errors"
  fi
}

for name in "${TARGETS[@]}"; do
  log "$name: warm-up ${WARMUP}s"
  run "$name" "$WARMUP"
done
for round in $(seq "$ROUNDS"); do
  for name in "${TARGETS[@]}"; do
    log "$name: round $round/$ROUNDS, ${DURATION}s with $CONNS connections"
    before=$(cpu_ticks "${PID[$name]}")
    run "$name" "$DURATION"
    after=$(cpu_ticks "${PID[$name]}")
    requests=$(awk '/requests in/ { print $1 }' "$TMP/wrk.txt")
    RPS[$name]+=" $(awk '/^Requests\/sec:/ { print $2 }' "$TMP/wrk.txt")"
    USREQ[$name]+=" $(us_per_request $((after - before)) "$requests")"
  done
done

plain=$(median "${USREQ[plain]}")
echo "| inbound target | requests/s | remora CPU µs/request | over plain |"
echo "|---|---:|---:|---:|"
for name in "${TARGETS[@]}"; do
  us=$(median "${USREQ[$name]}")
  echo "| $name | $(median "${RPS[$name]}") | $us | $(awk -v a="$us" -v b="$plain" 'BEGIN { printf "%+.1f", a - b }') |"
done
