#!/usr/bin/env bash
# cargo deny (deny.toml): RustSec advisories, licenses, bans, sources.
# Installs cargo-deny when missing. The advisory database comes from the local
# snapshot named by $REMORA_ADVISORY_DB when it is set (CI sets it: its
# machines cannot fetch the database); otherwise cargo-deny fetches it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null; then
    echo "installing cargo-deny"
    cargo install cargo-deny --locked --quiet
fi

snapshot="${REMORA_ADVISORY_DB:-}"

if [ -z "$snapshot" ]; then
    exec cargo deny check
fi

# --offline below also stops cargo metadata from downloading crates: fetch
# every platform's dependencies first (crates.io is reachable).
cargo fetch --quiet

# cargo-deny reads the database as a git checkout under db-path, in a folder
# named after its default URL's hash (cargo-deny 0.20).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
db="$work/advisory-dbs/advisory-db-3157b0e258782691"
mkdir -p "$db"
cp -r "$snapshot/." "$db"
git -C "$db" init -q
git -C "$db" add -A
git -C "$db" -c user.name=ci -c user.email=ci@localhost commit -qm snapshot
sed "s|^\[advisories\]$|[advisories]\ndb-path = \"$work/advisory-dbs\"|" deny.toml > "$work/deny.toml"
echo "cargo deny with the advisory snapshot in $snapshot"
cargo deny --offline --config "$work/deny.toml" check
