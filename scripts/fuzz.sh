#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time each:
#   bash scripts/fuzz.sh [seconds per target, default 60] [target...]
# Needs the nightly toolchain (rustup toolchain install nightly) and
# cargo-fuzz (installed when missing). The corpus grows in fuzz/corpus/<target>
# (seeded from fuzz/seeds/<target>); a crash is saved in
# fuzz/artifacts/<target>/ and stops the script with a non-zero status.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(config trace_headers consul_health etcd_value sniffer path_normalize jwt_token client_hello)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi

cargo +nightly fuzz build -O
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "== $target: ${seconds}s"
    cargo +nightly fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
done
