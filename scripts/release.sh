#!/usr/bin/env bash
# Builds remora as it ships: a profile-guided (PGO) release build. Three steps:
#   1. an instrumented release build (target/pgo/instrumented);
#   2. that binary serves the training workload, bench/pgo-training.sh (HTTP/1.1, the whole
#      stack, h2c, sidecar-to-sidecar mTLS), and the counts it wrote are merged by the
#      llvm-profdata of the LLVM rustc is built on;
#   3. the release build again, laid out and inlined by those counts (target/pgo/release).
# The binary is copied to target/release-pgo/remora. On remora's benchmarks it runs about a
# fifth fewer instructions and a fifth to a third fewer estimated cycles a request than the
# plain `cargo build --release` (docs/benchmarks.md); it behaves the same. Installs what it needs
# (Debian packages) when missing, as scripts/test.sh does. Takes two release builds.
set -euo pipefail
cd "$(dirname "$0")/.."

# rustc's LLVM writes the profiles; the llvm-profdata that reads them must be as new.
llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
host=$(rustc -vV | sed -n 's/^host: //p')
[[ -n "$llvm" && -n "$host" ]] || { echo "release.sh: cannot read rustc -vV" >&2; exit 1; }
source scripts/packages.sh
install_missing "${BUILD_PACKAGES[@]}" "llvm-$llvm" haproxy wrk nghttp2-client openssl curl util-linux python3
PATH=$PATH:/usr/sbin:/sbin # haproxy, for a user whose PATH lacks them
profdata=llvm-profdata-$llvm
command -v "$profdata" >/dev/null || { echo "release.sh: $profdata not found (Debian package llvm-$llvm)" >&2; exit 1; }

profiles=$PWD/target/pgo/profiles
rm -rf "$profiles"
mkdir -p "$profiles"
# With --target, the flags reach remora and its dependencies but not build scripts or
# procedural macros, which would otherwise be instrumented and profiled too. One flag, passed
# whole (CARGO_ENCODED_RUSTFLAGS: a path with spaces stays one argument).
build() { # target-dir flag
  env -u RUSTFLAGS CARGO_ENCODED_RUSTFLAGS="$2" CARGO_TARGET_DIR="$1" \
    cargo build --release --locked --bin remora --target "$host"
}

build target/pgo/instrumented "-Cprofile-generate=$profiles"
LLVM_PROFILE_FILE="$profiles/remora-%p-%m.profraw" \
  bench/pgo-training.sh "target/pgo/instrumented/$host/release/remora"
"$profdata" merge -o target/pgo/remora.profdata "$profiles"/remora-*.profraw
build target/pgo/release "-Cprofile-use=$PWD/target/pgo/remora.profdata"

mkdir -p target/release-pgo
cp "target/pgo/release/$host/release/remora" target/release-pgo/remora
echo "built target/release-pgo/remora (profile-guided)"
