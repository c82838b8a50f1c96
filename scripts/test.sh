#!/usr/bin/env bash
# Runs remora's whole test suite on a fresh Debian machine with Rust.
# Installs the Debian packages the tests need (when missing), then runs every
# unit, integration, doc and example test. Tests that need root skip with a
# message when run as another user.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: procps for `kill` (signals to the real
# binary), dnsmasq-base for a real DNS server (DNS SRV discovery), chromium
# to load the admin dashboard headless, iptables, iproute2 (`ip netns`) and
# util-linux (`setpriv`) for transparent mode's network-namespace tests;
# upstream servers and a load generator we did not write: nginx-light (h2c
# and HTTP/1.1 origin), haproxy (h2 origin), nghttp2-client (h2load) and
# python3-grpcio (a gRPC C-core server, tests/fixtures/grpc_server.py).
# bench/ also needs wrk.
packages=(procps dnsmasq-base chromium iptables iproute2 util-linux nginx-light haproxy nghttp2-client python3-grpcio)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo test --all-targets
