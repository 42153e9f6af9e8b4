"""Every CSV and XLSX fhir_cart writes goes through the one safe writer
(``fhir_cart.csv_safety``): an import rule over src/, and the registry's outputs (tables,
workbook, conflict report) checked for formula injection end to end."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path

import pytest

from fhir_cart.library.concepts import ConceptLibrary, load_concepts
from fhir_cart.library.terminology import load_terminology
from fhir_cart.registry.build import build_registry
from tests.registry_helpers import KEY, definition, reader_of, three_centres

SRC = Path(__file__).parents[3] / "src" / "fhir_cart"
WRITER = SRC / "csv_safety.py"
FORBIDDEN = re.compile(
    r"\bcsv\s*\.\s*(?:writer|DictWriter)\b|\bWorkbook\s*\(|\bWriteOnlyCell\b|\.cell\s*\(|"
    r"from\s+csv\s+import\s+(?:writer|DictWriter)|from\s+openpyxl\s+import\s+Workbook"
)


def test_no_csv_or_xlsx_writer_outside_the_safe_writer() -> None:
    found = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if path != WRITER
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if FORBIDDEN.search(line)
    ]
    assert found == []


def test_the_rule_sees_a_writer(tmp_path: Path) -> None:
    """The pattern is not vacuous: each way of writing a cell is caught."""
    for line in (
        "w = csv.writer(h)",
        "csv.DictWriter(h, f)",
        "book = Workbook()",
        "ws.cell(row=1, column=1, value=x)",
        "from openpyxl import Workbook",
    ):
        assert FORBIDDEN.search(line), line
    assert not FORBIDDEN.search("from openpyxl import load_workbook")


FORMULAS = ['=HYPERLINK("http://evil.example/x","click")', "+SUM(1;2)", "@cmd", "-2+3"]


@pytest.fixture(scope="module")
def library() -> ConceptLibrary:
    return load_concepts(load_terminology())


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_registry_outputs_hold_no_formula(tmp_path: Path, library: ConceptLibrary) -> None:
    cases = three_centres()
    for n, case in enumerate(cases["berlin"] + cases["london"]):
        attributes = {**case.patient.attributes, "ethnicity": FORMULAS[n % len(FORMULAS)]}
        case.patient.__dict__["attributes"] = attributes  # frozen model: test data only
    registry = definition(
        tmp_path,
        pseudonymisation={
            "dates": "relative",
            "anchor": "diagnosis",
            "keep_text": ["ethnicity"],
            "drop_patient_attributes": ["patient_name"],
        },
    )
    result = build_registry(
        registry, tmp_path / "out", key=KEY, reader=reader_of(cases), library=library
    )
    assert result.registry is not None
    out = tmp_path / "out"
    patients = (out / "tables" / "patients.csv").read_text()
    conflicts = (out / "reports" / "conflicts.csv").read_text()
    assert "ethnicity" in conflicts
    for text in (patients, conflicts):
        cells = [c for row in csv.reader(io.StringIO(text)) for c in row]
        assert not [c for c in cells if c.startswith(("=", "+", "@", "-2"))], text
        assert "'=HYPERLINK" in text or "'+SUM" in text
    with zipfile.ZipFile(out / "tables" / "registry.xlsx") as book:
        sheets = [book.read(n).decode() for n in book.namelist() if n.startswith("xl/worksheets/")]
    assert sheets
    assert not any("<f>" in s or "<f " in s for s in sheets)
    assert any("HYPERLINK" in s for s in sheets)


def test_numbers_keep_their_sign_and_text_is_escaped() -> None:
    from fhir_cart.csv_safety import csv_bytes

    written = csv_bytes(["day", "text"], [[-3, "-3"], [None, "=1+1"]]).decode()
    assert written == "day,text\n-3,'-3\n,'=1+1\n"
