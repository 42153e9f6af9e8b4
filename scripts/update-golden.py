"""Regenerate tests/golden/<case>/output.json from input.json (review the diff before committing).

input.json is a Case dump (records.Case), output.json the resources case_to_fhir makes of it
(relative references, terminology as of 2026-01-01).

.venv/bin/python scripts/update-golden.py
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson

from fhir_cart.library import shipped_folder
from fhir_cart.library.terminology import load_terminology
from fhir_cart.mappers.context import mapping_context
from fhir_cart.mappers.to_fhir import case_to_fhir
from fhir_cart.records import Case

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden"
AS_OF = dt.date(2026, 1, 1)


def render(case: Case) -> list[dict[str, object]]:
    terms = load_terminology(shipped_folder() / "terminology.yaml", as_of=AS_OF)
    ctx = mapping_context(terminology=terms, ref_style="relative")
    return case_to_fhir(ctx, case)


def main() -> None:
    for folder in sorted(p for p in GOLDEN.iterdir() if p.is_dir()):
        case = Case.model_validate_json((folder / "input.json").read_bytes())
        output = orjson.dumps(render(case), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        (folder / "output.json").write_bytes(output + b"\n")
        print(f"wrote {folder.name}/output.json")


if __name__ == "__main__":
    main()
