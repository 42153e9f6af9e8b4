#!/usr/bin/env bash
# The public International Patient Summary 2.0.0 example resources at .cache/ips-2.0.0/*.json
# (idempotent), from the npm package hl7.fhir.uv.ips@2.0.0; the pull integration test
# (tests/integration/test_ips_pull.py) loads them into both local FHIR servers.
set -euo pipefail
exec bash "$(dirname "$0")/fetch-npm-examples.sh" hl7.fhir.uv.ips@2.0.0 .cache/ips-2.0.0
