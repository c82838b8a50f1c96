#!/usr/bin/env bash
# The names of every crate in Cargo.lock and fuzz/Cargo.lock, sorted, one per line.
set -euo pipefail
cd "$(dirname "$0")/.."
awk -F'"' '/^name = /{ print $2 }' Cargo.lock fuzz/Cargo.lock | LC_ALL=C sort -u
