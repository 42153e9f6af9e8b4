"""How many clinical CodeableConcepts fhir_cart writes without a standard code, for the
seed and each fixture (issue 18 item 5: at most 10 % for the seed, 15 % for the others), and
the codings by code system.

A CodeableConcept counts as without a standard code when every coding it has is the
project's own (or it has none: text only), or is a standard code marked `verified: false`
in mappings/ (not read in a published artefact: it is written, with a warning, but it is not
counted as standard here). The anchor concept inside time extensions (which event a
relative day counts from) is not a clinical statement and is not counted
(fhir_cart.conformance.codings.codeable_concepts).

.venv/bin/python scripts/coding-share.py
"""

from __future__ import annotations

import datetime as dt
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit.fixture_cases import adult_cases, hsct_cases  # noqa: E402
from tests.unit.report.test_table_fixtures import table_cases  # noqa: E402
from tests.unit.seed_cases import seed_cases  # noqa: E402

from fhir_cart.conformance.codings import (  # noqa: E402
    coding_counts,
    own_share,
    unverified_codings,
    without_standard_code,
    without_standard_code_by_code,
)
from fhir_cart.library import shipped_folder  # noqa: E402
from fhir_cart.library.terminology import load_terminology  # noqa: E402
from fhir_cart.mappers.context import mapping_context  # noqa: E402
from fhir_cart.mappers.to_fhir import case_to_fhir  # noqa: E402

Share = tuple[int, int, Counter[str], Counter[str]]
"""(without a standard code, all clinical CodeableConcepts, codings by system, the ones
without by what they carry)."""


def shares() -> dict[str, Share]:
    """Each fixture's figures, terminology as of 2026-01-01."""
    terms = load_terminology(shipped_folder() / "terminology.yaml", as_of=dt.date(2026, 1, 1))
    ctx = mapping_context(terminology=terms, ref_style="relative")
    own = terms.system("fhir-cart")
    data = ctx.terminology.data  # the library's terminology: its groups and the concepts'
    unverified = unverified_codings(data.concepts, data.systems)
    fixtures = {
        "seed": seed_cases(),
        "hsct": hsct_cases(),
        "adult": adult_cases(),
        "lymphoma": table_cases("lymphoma_cart"),
        "myeloma": table_cases("myeloma_cart"),
    }
    out: dict[str, Share] = {}
    for name, cases in fixtures.items():
        resources = [r for case in cases for r in case_to_fhir(ctx, case)]
        without, concepts = without_standard_code(resources, own, unverified)
        by_code = without_standard_code_by_code(resources, own, unverified)
        out[name] = (without, concepts, coding_counts(resources), by_code)
    return out


def main() -> None:
    own = load_terminology(shipped_folder() / "terminology.yaml").system("fhir-cart")
    for name, (without, concepts, counts, by_code) in shares().items():
        total = sum(counts.values())
        print(
            f"{name}: {without} of {concepts} clinical CodeableConcepts without a standard "
            f"code ({without / concepts:.1%}); codings: {counts[own]} of {total} own "
            f"({own_share(counts, own):.1%}, anchors included)"
        )
        for system, n in counts.most_common():
            print(f"  {n:5d} {system}")
        print("  without a standard code, by what they carry:")
        for codes, n in by_code.most_common():
            print(f"    {n:5d} {codes}")


if __name__ == "__main__":
    main()
