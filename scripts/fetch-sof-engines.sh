#!/usr/bin/env bash
# Two SQL-on-FHIR v2 engines independent of fhir_cart, in their own virtualenv
# (.cache/sof-venv, idempotent), for tests/unit/conformance/test_views.py: fhir4ds (PyPI fhir4ds-v2,
# ViewDefinitions compiled to DuckDB SQL; it pins its own duckdb, hence the separate venv)
# and sqlonfhir (PyPI, the Python port of the SQL-on-FHIR reference implementation on
# fhirpathpy). Pinned: the comparison's figures are for these versions.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SOF_VENV:-.cache/sof-venv}
PINS="fhir4ds-v2==0.0.17 sqlonfhir==0.0.2 fhirpathpy==2.1.0"
if [ -f "$VENV/pins" ] && [ "$(cat "$VENV/pins")" = "$PINS" ]; then
  exit 0
fi
PY=${PYTHON:-python3}
rm -rf "$VENV"
"$PY" -m venv "$VENV"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $PINS 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import fhir4ds, sqlonfhir"
echo "$PINS" > "$VENV/pins"
echo "SQL-on-FHIR engines installed: $VENV"
