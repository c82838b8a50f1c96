#!/usr/bin/env bash
# Runs remora's whole test suite on a fresh Debian machine with Rust.
# Installs the Debian packages the tests need (when missing), then runs every
# unit, integration and example test. No test installs anything: a test that
# finds a tool missing fails and names the package listed here.
#
# Root: tests that need it (network namespaces, iptables, setpriv) are
# `#[ignore = "needs root (CI runs as root): ..."]`, so a plain `cargo test`
# by another user lists them as ignored, never as passed. Run as root (as CI
# does), this script includes them (`--include-ignored`), and there they fail
# if root is not enough. `two_pods`'s ignored `pod_helper` is a no-op outside
# a pod.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: procps for `kill` (signals to the real
# binary), curl (an HTTP client we did not write, presenting a client
# certificate to the inbound listener: tests/authorization.rs),
# dnsmasq-base for a real DNS server (DNS SRV discovery, hostnames), chromium
# to load the admin dashboard headless, iptables, iproute2 (`ip netns`) and
# util-linux (`setpriv`) for transparent mode's network-namespace tests, with
# openssl (`openssl s_server`, the HTTPS origin the egress policy lets
# through untouched: tests/two_pods.rs);
# upstream servers and a load generator we did not write: nginx-light (h2c
# and HTTP/1.1 origin), haproxy (h2 origin), nghttp2-client (h2load) and
# python3-grpcio (a gRPC C-core server, tests/fixtures/grpc_server.py, with
# python3, whose standard library it otherwise uses), with python3-protobuf
# and python3-pip for grpcio-health-checking (below); python3-jwt (PyJWT) and
# python3-cryptography make the keys and tokens of the JWT tests
# (tests/fixtures/jwt_tokens.py); python3-prometheus-client (the Prometheus
# parsers that read /metrics, tests/fixtures/parse_metrics.py); a real etcd
# v3 (etcd-server, the `etcd` binary, and etcd-client, `etcdctl`) for etcd
# discovery, registration and configuration; ca-certificates (the system's
# roots that TLS origination without `ca_file` trusts: tests/tls_origination.rs).
# wrk drives the training workload of the release build, which
# tests/deploy.rs runs (bench/pgo-training.sh); bench/ needs it too.
# The build itself needs protobuf-compiler (`protoc`: the
# etcd-client crate generates its gRPC code).
packages=(procps curl dnsmasq-base chromium iptables iproute2 util-linux openssl nginx-light haproxy nghttp2-client wrk python3-grpcio python3-protobuf python3-pip python3-jwt python3-cryptography etcd-server etcd-client python3-prometheus-client ca-certificates)
source scripts/packages.sh
install_missing "${BUILD_PACKAGES[@]}" "${packages[@]}"

# grpcio-health-checking from PyPI (Debian has none): the standard gRPC health
# service of Python grpcio for tests/health_checks.rs, pinned to the version
# of Debian's python3-grpcio so pip leaves that one alone.
if ! /usr/bin/python3 -c "import grpc_health.v1.health" 2>/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo /usr/bin/python3 -m pip install --quiet --break-system-packages --no-deps \
        "grpcio-health-checking==$(/usr/bin/python3 -c 'import grpc; print(grpc.__version__)')"
fi

if [ "$(id -u)" -eq 0 ]; then
    cargo test --all-targets -- --include-ignored
else
    echo "not root: the tests that need root are listed as ignored"
    cargo test --all-targets
fi
