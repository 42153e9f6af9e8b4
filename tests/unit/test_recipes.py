"""The recipes of docs/architecture.md, followed on temporary copies (issue 21: each recipe
is exercised by a test): add a concept, add a summary measure, a loader for a new YAML file
(data and code changes made here, then used); for a resource kind, a server quirk and a
linkage field, the files each recipe names are the ones that hold what must change."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from fhir_cart.application import Application
from fhir_cart.errors import ConfigError
from fhir_cart.library.yamlfile import load_model
from fhir_cart.mappers.from_fhir import cases_from_fhir
from fhir_cart.mappers.kinds import RESOURCE_KINDS
from fhir_cart.mappers.to_fhir import case_to_fhir
from fhir_cart.report.evaluate import summarise
from fhir_cart.settings import Settings
from tests.support import MAPPINGS, ROOT, SEED_FILE, SEED_MAPPING

SRC = ROOT / "src" / "fhir_cart"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# -- add a concept: data only ------------------------------------------------------------

CONCEPT = """
  recipe_prior_transplants:
    label: Number of prior stem cell transplants
    kind: observation
    codings:
      - system: fhir-cart
        code: recipe-prior-transplants
        display: Number of prior stem cell transplants
        source: fhir_cart
        verified: true
    value: {type: integer, min: 0, max: 5}
"""
MAPPING = """\
centre: recipe
patients:
  columns: {study_id: Patient}
events:
  - name: prior-transplants
    concept: recipe_prior_transplants
    columns: {value: Prior transplants, when_date: Date}
"""
ROWS = "Patient,Prior transplants,Date\nR-1,2,2024-03-01\nR-2,0,2024-04-11\n"


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped library folder, for a recipe to change."""
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    folder = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, folder)
    return folder


def test_add_a_concept_as_data_and_map_a_row_with_it_both_ways(
    library: Path, tmp_path: Path
) -> None:
    concepts = library / "concepts.yaml"
    text = concepts.read_text(encoding="utf-8")
    assert text.count("\nconcepts:\n") == 1
    concepts.write_text(text.replace("\nconcepts:\n", "\nconcepts:" + CONCEPT, 1), "utf-8")
    (tmp_path / "mapping.yaml").write_text(MAPPING, encoding="utf-8")
    (tmp_path / "study.csv").write_text(ROWS, encoding="utf-8")
    app = Application(Settings(data_dir=tmp_path / "data", mappings_dir=library))
    read = app.read(tmp_path / "study.csv", tmp_path / "mapping.yaml")
    assert read.rejects == []
    ctx = app.mapping_context(read.mapping)
    for case, value in zip(read.cases, (2, 0), strict=True):
        (event,) = case.events
        assert (event.concept, event.value and event.value.number) == (
            "recipe_prior_transplants",
            value,
        )
        resources = case_to_fhir(ctx, case)
        observation = resources[1]
        assert observation["resourceType"] == "Observation"
        assert observation["code"]["coding"][0]["code"] == "recipe-prior-transplants"
        assert observation["valueInteger"] == value
        assert cases_from_fhir(ctx, resources).cases == [case]
    shipped = Application(Settings(data_dir=tmp_path / "data"))  # the library unchanged
    with pytest.raises(ConfigError, match="recipe_prior_transplants"):
        shipped.read(tmp_path / "study.csv", tmp_path / "mapping.yaml")


# -- add a summary measure: data only ------------------------------------------------------

MEASURE = """\
  - id: recipe_with_crs
    label: Patients with cytokine release syndrome at any time
    count: {event: {concept: crs}}
"""


def test_add_a_summary_measure_as_data_and_evaluate_it(library: Path, tmp_path: Path) -> None:
    study = library / "studies" / "seed.yaml"
    text = study.read_text(encoding="utf-8")
    assert text.count("\nmeasures:\n") == 1
    study.write_text(text.replace("\nmeasures:\n", "\nmeasures:\n" + MEASURE, 1), "utf-8")
    app = Application(Settings(data_dir=tmp_path / "data", mappings_dir=library))
    cases = app.read(SEED_FILE, SEED_MAPPING).cases
    results = {r.id: r for r in summarise(cases, app.study("seed"))}
    given = sorted(c.patient.study_id for c in cases if any(e.concept == "crs" for e in c.events))
    assert 0 < len(given) < len(cases)  # the fixture tells counting from a constant
    assert results["recipe_with_crs"].value == len(given)
    assert sorted(results["recipe_with_crs"].patients) == given
    shipped = Application(Settings(data_dir=tmp_path / "data")).study("seed")
    assert "recipe_with_crs" not in {m.id for m in shipped.measures}


# -- a loader for a new YAML file ----------------------------------------------------------


class _Shelf(BaseModel):
    """A new file's model, as the recipe says: pydantic, ``extra="forbid"``."""

    model_config = ConfigDict(extra="forbid")
    name: str
    slots: int = 1


def test_a_loader_for_a_new_yaml_file_speaks_like_every_other(tmp_path: Path) -> None:
    path = tmp_path / "shelf.yaml"
    path.write_text("name: top\nslots: 3\n", encoding="utf-8")
    assert load_model(path, _Shelf, "shelf file") == _Shelf(name="top", slots=3)
    path.write_text("name: top\nslots: 3\ncolour: red\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_model(path, _Shelf, "shelf file")
    message = caught.value.message
    assert str(path) in message
    assert re.search(r"colour: .*\(line 3; value 'red'; fix: remove the key", message), message


# -- recipes that change code: the files they name ------------------------------------------

WRITTEN_TYPES = {k.type for k in RESOURCE_KINDS if k.concept_kind is not None}

KIND_RECIPE_FILES = {
    "mappers/kinds.py",  # the row (with where the views read it, where extensions go)
    "mappers/to_fhir.py",  # the builder (and where attributes may go on the type)
    "mappers/from_resources.py",  # the reverse mapper
}
"""The source files holding a table by resource type that a new kind must join; the fourth
file is library/concepts.py (the ``Kind`` literal, a word list of concept kinds)."""

OTHER_TYPE_NAMES = {
    "sync/capabilities.py": "R4's Patient compartment: a fact of R4, every type already in",
    "sync/pulled.py": "the medication family: a Medication is read through its events",
    "library/studies.py": "`Condition` is also the name of a study predicate's model",
}
"""Files naming a written type for a reason of their own (no table of the kinds)."""


def _files_naming_written_types() -> set[str]:
    found = set()
    quoted = [f"{q}{t}{q}" for t in WRITTEN_TYPES for q in "\"'"]
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if not any(q in text for q in quoted):
            continue  # no string literal names one
        tree = ast.parse(text)
        if any(isinstance(n, ast.Constant) and n.value in WRITTEN_TYPES for n in ast.walk(tree)):
            found.add(str(path.relative_to(SRC)))
    return found


def _recipe(title: str) -> str:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    start = text.index(f"### {title}\n")
    end = text.find("\n### ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_a_new_resource_kind_touches_the_files_its_recipe_names() -> None:
    """Every file that keeps a table by resource type is one the recipe names (so a new
    kind joins them all); with the ``Kind`` literal, four files, and the recipe says which."""
    tables = _files_naming_written_types() - set(OTHER_TYPE_NAMES)
    assert tables == KIND_RECIPE_FILES
    assert len(KIND_RECIPE_FILES | {"library/concepts.py"}) <= 4
    recipe = _recipe("Add a FHIR resource kind")
    for name in [*KIND_RECIPE_FILES, "library/concepts.py"]:
        assert f"`{name}`" in recipe, name


def test_the_finder_sees_a_new_table_of_types() -> None:
    planted = ast.parse('_MINE = {"AdverseEvent": 1}')
    assert any(isinstance(n, ast.Constant) and n.value in WRITTEN_TYPES for n in ast.walk(planted))


def _defines(module: str, name: str) -> bool:
    tree = ast.parse((SRC / module).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == name:
                return True
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
    return False


CODE_RECIPES = {
    "Add a server quirk": {
        "sync/capabilities.py": ["ServerCapabilities"],
        "client.py": ["FhirClient"],
        "sync/push.py": ["push"],
        "sync/pull.py": ["pull_resources"],
    },
    "Add a linkage field": {
        "registry/definition.py": ["LinkageDef"],
        "registry/linkage.py": ["linkage_record", "deterministic_links"],
        "registry/_splink.py": ["_date_comparison", "_name_comparison"],
        "registry/names.py": [],
        "registry/protect.py": [],
        "registry/pseudonyms.py": [],
        "registry/extract.py": [],
        "devservers/registry_data.py": ["make_registry"],
    },
    "Add a summary measure": {
        "library/studies.py": ["Measure", "_StudyChecker"],
        "report/evaluate.py": ["summarise"],
        "report/tables.py": [],
    },
}


@pytest.mark.parametrize("title", sorted(CODE_RECIPES))
def test_a_recipe_names_files_and_functions_that_exist(title: str) -> None:
    recipe = _recipe(title)
    for module, names in CODE_RECIPES[title].items():
        assert f"`{module}`" in recipe, (title, module)
        assert (SRC / module).is_file(), module
        for name in names:
            assert f"`{name}`" in recipe, (title, name)
            assert _defines(module, name), (module, name)


def test_each_recipe_names_the_test_that_exercises_it() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    titles = re.findall(r"^### ((?:Add|Recipe: ).*)$", text, flags=re.MULTILINE)
    assert len(titles) == 7, titles
    for title in titles:
        assert re.search(r"Tested by `tests/", _recipe(title)), title
