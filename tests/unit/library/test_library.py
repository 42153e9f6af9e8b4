"""One library object per mappings folder, passed down: no process-wide folder (issue 21
item 2)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fhir_cart.application import Application
from fhir_cart.errors import ConfigError
from fhir_cart.library import Library
from fhir_cart.settings import Settings
from tests.conftest import MAPPINGS, ROOT, SEED_FILE, SEED_MAPPING


@pytest.fixture
def own_folder(tmp_path: Path) -> Path:
    """A copy of mappings/ with a study only it has and a status table that excludes
    every preliminary observation."""
    folder = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, folder)
    shutil.copy(folder / "studies" / "seed.yaml", folder / "studies" / "only-here.yaml")
    return folder


def test_two_applications_in_one_process_keep_their_own_library(
    own_folder: Path, tmp_path: Path
) -> None:
    """Building a second application does not change what the first one reads (the old
    process-wide folder was replaced by whichever Application was built last)."""
    mine = Application(Settings(data_dir=tmp_path, mappings_dir=own_folder))
    shipped = Application(Settings(data_dir=tmp_path))
    assert mine.study("only-here").name == shipped.study("seed").name
    with pytest.raises(ConfigError, match="only-here"):
        shipped.study("only-here")
    assert mine.library.folder == own_folder
    assert mine.mapping_context().library is mine.library
    assert mine.pull_context().library is mine.library
    assert shipped.library is Library.default()


def test_the_library_reaches_the_reader_and_the_mapping_context(
    own_folder: Path, tmp_path: Path
) -> None:
    """A concept only the settings' folder has is known to the mapping check, the reader
    and the mapping context of that application, not to a default one."""
    concepts = own_folder / "concepts.yaml"
    text = concepts.read_text(encoding="utf-8")
    assert "\nconcepts:\n" in text
    concepts.write_text(
        text.replace(
            "\nconcepts:\n",
            "\nconcepts:\n  only_here_flag:\n    label: Only here\n    kind: observation\n"
            "    value: {type: text}\n",
            1,
        ),
        encoding="utf-8",
    )
    mine = Application(Settings(data_dir=tmp_path, mappings_dir=own_folder))
    assert mine.library.concepts().has("only_here_flag")
    assert mine.mapping_context().concepts.has("only_here_flag")
    assert not Library.default().concepts().has("only_here_flag")
    mapping = mine.load_mapping(SEED_MAPPING)
    assert mine.read_study(SEED_FILE, mapping).cases


def test_one_library_object_per_folder_reads_each_file_once(own_folder: Path) -> None:
    library = Library.at(own_folder)
    assert Library.at(own_folder) is library
    assert library.concepts() is library.concepts()
    assert library.statuses() is library.statuses()
    assert library.profiles() is library.profiles()
    assert library.study_path("x") == own_folder / "studies" / "x.yaml"
    assert library.centre("seed") == own_folder / "centres" / "seed.yaml"


def test_both_cross_checks_build_on_the_one_checker() -> None:
    """The centre mapping's and the study definition's checks share one helper: the same
    problem (a misspelt concept) is said the same way by both."""
    from fhir_cart.library import studies, study_mapping
    from fhir_cart.library.checks import Checker

    checkers = [
        c
        for module in (studies, study_mapping)
        for c in vars(module).values()
        if isinstance(c, type) and c.__name__.endswith("Checker") and c is not Checker
    ]
    assert len(checkers) == 2
    assert all(issubclass(c, Checker) for c in checkers)
    with pytest.raises(ConfigError, match=r"anchor: unknown concept 'cart_infusio' \(did you"):
        studies.parse_study({"name": "s", "anchor": "cart_infusio", "measures": []})


def test_a_concept_library_file_is_checked_once_per_content(tmp_path: Path) -> None:
    """concepts.yaml was parsed and checked again by every application, mapping context and
    command: one object per path and content is shared (the model is frozen)."""
    from fhir_cart.library.concepts import read_concepts_file

    path = tmp_path / "concepts.yaml"
    path.write_text((ROOT / "mappings" / "concepts.yaml").read_text(encoding="utf-8"))
    first = read_concepts_file(path)
    assert read_concepts_file(path) is first
    assert first.model_config.get("frozen") is True
    with path.open("a", encoding="utf-8") as changed:
        changed.write("\n# a comment: the content changed\n")
    assert read_concepts_file(path) is not first  # changed content: read again
    path.write_text("concepts: {x: 1}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="concept library"):
        read_concepts_file(path)
