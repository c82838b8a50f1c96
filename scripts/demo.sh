#!/usr/bin/env bash
# The README's first command: builds remora (installing what the build needs
# besides Rust, scripts/packages.sh) and runs `remora demo`, a built-in
# configuration with three echo backends. Arguments go to `remora demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/packages.sh
install_missing "${BUILD_PACKAGES[@]}"
exec cargo run --release -- demo "$@"
