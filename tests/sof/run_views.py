"""Run SQL-on-FHIR v2 ViewDefinitions over a folder of NDJSON with an engine independent of
fhir_cart, and print the rows as JSON (``{view name: [row, ...]}``, every value a string or
null). Runs in the engines' own virtualenv (.cache/sof-venv, scripts/fetch-sof-engines.sh);
it imports nothing of fhir_cart.

    python run_views.py --engine duckdb|reference NDJSON_DIR VIEWS_DIR

``duckdb``: fhir4ds (PyPI fhir4ds-v2), which compiles each view to DuckDB SQL.
``reference``: sqlonfhir (PyPI), the Python port of the SQL-on-FHIR reference
implementation, over fhirpathpy.
"""

from __future__ import annotations

import argparse
import decimal
import json
import sys
from pathlib import Path
from typing import Any


def _resources(folder: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(folder.glob("*.ndjson")):
        with path.open(encoding="utf-8") as handle:
            out += [json.loads(line) for line in handle if line.strip()]
    return out


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, decimal.Decimal | float | int):
        return str(value)
    return str(value)


def _duckdb(resources: list[dict[str, Any]], views: dict[str, Any]) -> dict[str, list[Any]]:
    import fhir4ds
    from fhir4ds.cql.loader.fhir_loader import FHIRDataLoader

    con = fhir4ds.create_connection()
    FHIRDataLoader(con).load_resources(resources)
    out = {}
    for name, view in views.items():
        cursor = con.execute(fhir4ds.generate_view_sql(view))
        columns = [d[0] for d in cursor.description]
        out[name] = [dict(zip(columns, map(_text, row), strict=True)) for row in cursor.fetchall()]
    return out


def _reference(resources: list[dict[str, Any]], views: dict[str, Any]) -> dict[str, list[Any]]:
    import sqlonfhir

    return {
        name: [{k: _text(v) for k, v in row.items()} for row in sqlonfhir.evaluate(resources, view)]
        for name, view in views.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=("duckdb", "reference"), required=True)
    parser.add_argument("ndjson", type=Path)
    parser.add_argument("views", type=Path)
    args = parser.parse_args()
    views = {
        p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(args.views.glob("*.json"))
    }
    run = _duckdb if args.engine == "duckdb" else _reference
    json.dump(run(_resources(args.ndjson), views), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
