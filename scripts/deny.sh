#!/usr/bin/env bash
# cargo deny (deny.toml): RustSec advisories, licenses, bans, sources.
# Installs cargo-deny when missing. The advisory database comes from a local
# snapshot when one is found (these build machines cannot reach GitHub):
# $REMORA_ADVISORY_DB, or ../shared/rustsec-advisory-db next to the
# repository; otherwise cargo-deny fetches it (needs GitHub).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null; then
    echo "installing cargo-deny"
    cargo install cargo-deny --locked --quiet
fi

snapshot="${REMORA_ADVISORY_DB:-}"
for candidate in ../shared/rustsec-advisory-db ../../shared/rustsec-advisory-db; do
    if [ -z "$snapshot" ] && [ -d "$candidate" ]; then
        snapshot="$candidate"
    fi
done

if [ -z "$snapshot" ]; then
    exec cargo deny check
fi

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
