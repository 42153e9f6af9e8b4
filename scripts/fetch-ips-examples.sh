#!/usr/bin/env bash
# Put the public International Patient Summary 2.0.0 example resources at
# .cache/ips-2.0.0/*.json (idempotent). They ship in the npm package hl7.fhir.uv.ips@2.0.0
# (package/example/*.json); the pull integration test (tests/integration/test_ips_pull.py)
# loads them into both local FHIR servers.
set -euo pipefail
cd "$(dirname "$0")/.."
target=.cache/ips-2.0.0
[ -s "$target/.complete" ] && exit 0
mkdir -p .cache
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent hl7.fhir.uv.ips@2.0.0 >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp" package/example
rm -rf "$target"
mkdir -p "$target"
mv "$tmp"/package/example/*.json "$target"/
ls "$target" | wc -l > "$target/.complete"
echo "fetched $target ($(cat "$target/.complete") files)"
