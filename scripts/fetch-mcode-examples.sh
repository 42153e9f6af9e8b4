#!/usr/bin/env bash
# The public mCODE 4.0.0 example resources at .cache/mcode-4.0.0/*.json (idempotent), from
# the npm package hl7.fhir.us.mcode@4.0.0; the pull integration test
# (tests/integration/test_mcode_pull.py) loads them into a local FHIR server.
set -euo pipefail
exec bash "$(dirname "$0")/fetch-npm-examples.sh" hl7.fhir.us.mcode@4.0.0 .cache/mcode-4.0.0
