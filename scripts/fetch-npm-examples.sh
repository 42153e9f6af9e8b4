#!/usr/bin/env bash
# Put the example resources of a public FHIR npm package at TARGET/*.json (idempotent):
#   bash scripts/fetch-npm-examples.sh PACKAGE@VERSION TARGET
# e.g. hl7.fhir.us.mcode@4.0.0 .cache/mcode-4.0.0 (package/example/*.json of its tarball).
set -euo pipefail
cd "$(dirname "$0")/.."
package=$1
target=$2
[ -s "$target/.complete" ] && exit 0
mkdir -p "$(dirname "$target")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$package" >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp" package/example
rm -rf "$target"
mkdir -p "$target"
mv "$tmp"/package/example/*.json "$target"/
ls "$target" | wc -l > "$target/.complete"
echo "fetched $target ($(cat "$target/.complete") files)"
