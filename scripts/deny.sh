#!/usr/bin/env bash
# cargo deny (deny.toml): RustSec advisories, licenses, bans, sources.
# Installs cargo-deny when missing. The advisories are the repository's own copy,
# deny/advisory-db (those of the crates in the lock files; scripts/advisories.sh refreshes
# it), or the database checkout named by $REMORA_ADVISORY_DB; cargo deny runs offline.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null; then
    echo "installing cargo-deny"
    cargo install cargo-deny --locked --quiet
fi

snapshot="${REMORA_ADVISORY_DB:-deny/advisory-db}"
if [ "$snapshot" = deny/advisory-db ]; then
    added=$(bash scripts/locked-crates.sh | LC_ALL=C comm -23 - deny/advisory-db/crates.txt)
    if [ -n "$added" ]; then
        echo "deny/advisory-db predates these dependencies; refresh it with" \
            "scripts/advisories.sh and a checkout of rustsec/advisory-db:" $added >&2
        exit 1
    fi
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
