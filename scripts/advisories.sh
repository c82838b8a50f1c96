#!/usr/bin/env bash
# Refreshes deny/advisory-db, the RustSec advisories that cargo deny checks remora against
# (scripts/deny.sh), from a full checkout of https://github.com/rustsec/advisory-db:
#   bash scripts/advisories.sh PATH/TO/advisory-db
# Only the advisories of the crates in Cargo.lock and fuzz/Cargo.lock are kept (the whole
# database is 8 MB), with the list of those crates, so that scripts/deny.sh can tell when a
# dependency was added since and the copy must be refreshed.
set -euo pipefail
cd "$(dirname "$0")/.."
source=${1:?usage: scripts/advisories.sh PATH/TO/advisory-db (a checkout of rustsec/advisory-db)}
[ -d "$source/crates" ] || { echo "$source has no crates/ folder: not an advisory-db checkout" >&2; exit 1; }

target=deny/advisory-db
rm -rf "$target"
mkdir -p "$target/crates"
cp "$source/LICENSE.txt" "$target/"
cp -r "$source/rust" "$target/"
bash scripts/locked-crates.sh >"$target/crates.txt"
while read -r crate; do
    if [ -d "$source/crates/$crate" ]; then
        cp -r "$source/crates/$crate" "$target/crates/"
    fi
done <"$target/crates.txt"
echo "deny/advisory-db: $(find "$target/crates" -name '*.md' | wc -l) advisories of" \
    "$(wc -l <"$target/crates.txt") crates, from $source"
