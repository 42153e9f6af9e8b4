"""``fhir-cart library check FILE`` and the bound-value rule (issue 18 item 1): a study's
library file is checked before any data is read; a concept that would put a value outside
the required binding of the mCODE profile it claims is refused, naming the word, the value
set and the fix, by the check and whenever a mapping or a pull loads the library."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_cart.cli import main
from fhir_cart.errors import ConfigError
from fhir_cart.library import Library
from fhir_cart.library.bindings import bound_value_problems
from fhir_cart.library.concepts import read_concepts_file
from fhir_cart.library.study_mapping import load_study_mapping
from tests.support import need
from tests.unit.conformance.test_conformance import MCODE, R4
from tests.unit.library.test_study_library import TRAVELLING

MCODE_VS = "http://hl7.org/fhir/us/mcode/ValueSet/mcode-condition-status-trend-max-vs"
OPEN_STATUS = """\
concepts:
  my_status:
    label: Status on our own scale
    kind: observation
    value: {type: coded, value_set: mrd_result, open: true}
    profile: disease_status
"""
BAD = (
    OPEN_STATUS
    + """\
  imwg_response:
    label: IMWG response
    kind: observation
    value: {type: coded, value_set: no_such_group}
  cart_infusion:
    label: Again
    kind: procedure
"""
)


def test_the_shipped_library_meets_the_bindings_it_claims() -> None:
    library = Library.default()
    shipped = read_concepts_file(library.folder / "concepts.yaml")
    terms = library.terminology().data
    assert any(c.profile in library.profiles().bound_values for c in shipped.concepts.values())
    assert bound_value_problems(shipped.concepts, terms, library.profiles()) == []


def test_the_bound_codes_are_the_mcode_package_expansion() -> None:
    need(MCODE.is_dir() and R4.is_dir(), "mCODE package / Medplum definitions not set up")
    from fhir_cart.conformance.checks import Definitions

    files = ("profiles-resources.json", "valuesets.json", "v3-codesystems.json")
    defs = Definitions.load(MCODE, *(R4 / name for name in files))
    bound = Library.default().profiles().bound_values["disease_status"]
    assert bound.value_set == MCODE_VS
    expanded = defs.expand(MCODE_VS)
    assert expanded is not None
    assert bound.codes == {f"{system}|{code}" for system, code in expanded}


def test_check_says_what_a_good_file_adds_and_where_it_is_published(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "lib.yaml").write_text(TRAVELLING, encoding="utf-8")
    assert main(["library", "check", str(tmp_path / "lib.yaml")]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "adds 1 concepts, 1 attributes, 1 patient attributes" in shown
    assert "https://example.org/fhir/lymphoma-study/CodeSystem/study-concepts|bridging_note" in (
        shown
    )
    assert "lymphoma-study/StructureDefinition/prior-lines" in shown


def test_check_refuses_each_problem_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.yaml").write_text(BAD, encoding="utf-8")
    assert main(["library", "check", str(tmp_path / "bad.yaml")]) == 2
    shown = " ".join(capsys.readouterr().err.split())
    assert "concepts.cart_infusion: already defined in the shared concept library" in shown
    assert "concepts.imwg_response.value.value_set: no terminology group 'no_such_group'" in shown
    assert "`open: true` writes a word outside value set 'mrd_result' as text" in shown
    assert "word 'positive' of value set 'mrd_result' has no code in it" in shown
    assert MCODE_VS in shown
    assert "no `canonical:`" in shown  # a warning: its codes would go unpublished


def test_check_names_the_line_of_a_yaml_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.yaml").write_text("concepts:\n  x: [\n", encoding="utf-8")
    assert main(["library", "check", str(tmp_path / "bad.yaml")]) == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_a_mapping_naming_such_a_library_is_refused_when_loaded(tmp_path: Path) -> None:
    (tmp_path / "lib.yaml").write_text(OPEN_STATUS, encoding="utf-8")
    seed = (Path(__file__).resolve().parents[3] / "mappings" / "centres" / "seed.yaml").read_text()
    mapping = seed.replace("study: seed\n", "study: seed\nlibrary: lib.yaml\n", 1)
    (tmp_path / "mapping.yaml").write_text(mapping, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"my_status: claims profile 'disease_status'"):
        load_study_mapping(tmp_path / "mapping.yaml")
