"""A registry knows the concepts its centres' library files add, and library files of its
own (``library:`` in the registry file; issue 18 item 1): its study file counts them, its
tables and FHIR output carry them; the same key defined two ways is refused."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from fhir_cart.application import Application
from fhir_cart.cli.registry import registry_app
from fhir_cart.errors import ConfigError
from fhir_cart.mappers.context import mapping_context
from fhir_cart.registry.definition import load_registry
from fhir_cart.settings import Settings
from fhir_cart.usecases.registry import registry_own

FIXTURES = Path(__file__).parents[3] / "fixtures" / "registry"
KEY = "registry-library-test-key-0123456789abcdef"
CENTRE_LIBRARY = """\
canonical: https://berlin.example.org/fhir
concepts:
  referral_note:
    label: Referral note
    kind: observation
    value: {type: text}
"""
REGISTRY_LIBRARY = """\
concepts:
  registry_review:
    label: Registry data review
    kind: procedure
"""
MEASURES = """\
  - id: referral_notes
    label: Patients with a referral note
    count: {event: {concept: referral_note}}
  - id: reviews
    label: Patients with a registry review
    count: {event: {concept: registry_review}}
"""


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fixture registry, Berlin's mapping naming a library file that adds a concept
    (its remark column, synthetic), the registry naming one of its own, and the study
    counting both."""
    monkeypatch.setenv("FHIR_CART_REGISTRY_KEY", KEY)
    monkeypatch.setenv("FHIR_CART_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    folder = tmp_path / "registry"
    shutil.copytree(FIXTURES, folder)
    (folder / "berlin-library.yaml").write_text(CENTRE_LIBRARY, encoding="utf-8")
    (folder / "registry-library.yaml").write_text(REGISTRY_LIBRARY, encoding="utf-8")
    berlin = folder / "mappings" / "berlin.yaml"
    text = berlin.read_text(encoding="utf-8")
    text = text.replace(
        'csv_delimiter: ";"\n', 'csv_delimiter: ";"\nlibrary: ../berlin-library.yaml\n'
    )
    text = text.replace("  Bemerkung: free text\n", "")
    text = text.replace(
        "\nignore:",
        "\n  - concept: referral_note\n    columns: {value: Bemerkung, when_date: Diagnosedatum}\n"
        "\nignore:",
    )
    berlin.write_text(text, encoding="utf-8")
    study = folder / "study.yaml"
    study.write_text(study.read_text().replace("\nmeasures:\n", "\nmeasures:\n" + MEASURES, 1))
    definition = folder / "registry.yaml"
    definition.write_text(
        definition.read_text().replace(
            "study: study.yaml", "study: study.yaml\nlibrary: [registry-library.yaml]", 1
        )
    )
    return folder


def _build(folder: Path, out: Path) -> None:
    result = CliRunner().invoke(
        registry_app, ["build", str(folder / "registry.yaml"), "-o", str(out)]
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output


@pytest.mark.slow  # splink and DuckDB: seconds; the full suite runs it, not the fast loop
def test_the_registry_counts_tables_and_codes_the_added_concepts(
    registry: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    _build(registry, out)
    summaries = orjson.loads((out / "summaries.json").read_bytes())
    berlin = {m["id"]: m["value"] for m in summaries["centres"]["berlin"]}
    with (registry / "berlin" / "berlin.csv").open(encoding="utf-8") as handle:
        remarks = sum(1 for row in csv.DictReader(handle, delimiter=";") if row["Bemerkung"])
    assert remarks > 0
    assert (berlin["referral_notes"], berlin["reviews"]) == (remarks, 0)
    with (out / "tables" / "events.csv").open(encoding="utf-8") as handle:
        concepts = [row["concept"] for row in csv.DictReader(handle)]
    assert concepts.count("referral_note") == remarks
    # the registry's push writes them with the codes of the centre library's CodeSystem
    app = Application(Settings(data_dir=tmp_path / "data"))
    own = registry_own(app, load_registry(registry / "registry.yaml"))
    assert own is not None
    ctx = mapping_context(library=app.library, extra=own)
    assert ctx.concepts.codeable("referral_note")["coding"][0]["system"] == (
        "https://berlin.example.org/fhir/CodeSystem/concepts"
    )
    assert ctx.concepts.has("registry_review")


def test_one_key_defined_two_ways_is_refused(registry: Path, tmp_path: Path) -> None:
    (registry / "registry-library.yaml").write_text(
        CENTRE_LIBRARY.replace("Referral note", "Another note").replace("canonical", "#")
    )
    with pytest.raises(ConfigError, match=r"referral_note: defined two different ways"):
        _build(registry, tmp_path / "out")
