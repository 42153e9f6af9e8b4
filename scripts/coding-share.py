"""Count the codings fhir_cart emits for the seed (and the other fixtures) by code system.

.venv/bin/python scripts/coding-share.py
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit.fixture_cases import adult_cases, hsct_cases  # noqa: E402
from tests.unit.seed_cases import seed_cases  # noqa: E402

from fhir_cart.conformance.codings import coding_counts, own_share  # noqa: E402
from fhir_cart.library import shipped_folder  # noqa: E402
from fhir_cart.library.terminology import load_terminology  # noqa: E402
from fhir_cart.mappers.context import mapping_context  # noqa: E402
from fhir_cart.mappers.to_fhir import case_to_fhir  # noqa: E402


def main() -> None:
    terms = load_terminology(shipped_folder() / "terminology.yaml", as_of=dt.date(2026, 1, 1))
    ctx = mapping_context(terminology=terms, ref_style="relative")
    own = terms.system("fhir-cart")
    for name, cases in (("seed", seed_cases()), ("hsct", hsct_cases()), ("adult", adult_cases())):
        resources = [r for case in cases for r in case_to_fhir(ctx, case)]
        counts = coding_counts(resources)
        total = sum(counts.values())
        print(f"{name}: {counts[own]} of {total} own ({own_share(counts, own):.1%})")
        for system, n in counts.most_common():
            print(f"  {n:5d} {system}")


if __name__ == "__main__":
    main()
