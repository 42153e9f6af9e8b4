"""One YAML loader, one error style (issue 21 item 5): every file fhir_cart reads says, for
a key it does not know, the file, the key path, the line, the value and the fix."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fhir_cart.errors import ConfigError
from fhir_cart.library.concepts import read_concepts_file
from fhir_cart.library.profiles import load_profiles
from fhir_cart.library.statuses import load_statuses
from fhir_cart.library.studies import load_study
from fhir_cart.library.study_mapping import load_study_mapping
from fhir_cart.library.terminology import load_terminology
from fhir_cart.registry.definition import load_registry
from tests.conftest import MAPPINGS, ROOT

REGISTRY = ROOT / "fixtures" / "registry"

UNKNOWN = r"Extra inputs are not permitted"
UNKNOWN_FIX = r"fix: remove the key, or correct its spelling"
# file to copy, loader, what is said of a stray `colour: red` and its fix
LOADERS: dict[str, tuple[Path, Callable[[Path], Any], str, str]] = {
    "terminology": (MAPPINGS / "terminology.yaml", load_terminology, UNKNOWN, UNKNOWN_FIX),
    "concepts": (MAPPINGS / "concepts.yaml", read_concepts_file, UNKNOWN, UNKNOWN_FIX),
    # a resource type named colour: its elements are a mapping
    "statuses": (
        MAPPINGS / "statuses.yaml",
        load_statuses,
        r"Input should be a valid dictionary",
        r"fix: give a mapping \(key: value lines\)",
    ),
    "profiles": (MAPPINGS / "profiles.yaml", load_profiles, UNKNOWN, UNKNOWN_FIX),
    "mapping": (MAPPINGS / "centres" / "seed.yaml", load_study_mapping, UNKNOWN, UNKNOWN_FIX),
    "study": (MAPPINGS / "studies" / "seed.yaml", load_study, UNKNOWN, UNKNOWN_FIX),
    "registry": (REGISTRY / "registry.yaml", load_registry, UNKNOWN, UNKNOWN_FIX),
}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_loader_names_file_key_line_value_and_fix(name: str, tmp_path: Path) -> None:
    source, load, said, fix = LOADERS[name]
    folder = tmp_path / "copy"
    shutil.copytree(source.parent, folder)
    path = folder / source.name
    text = path.read_text(encoding="utf-8").rstrip("\n") + "\n"
    line = text.count("\n") + 1  # the stray key is the file's last line
    path.write_text(text + "colour: red\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = caught.value.message
    assert str(path) in message
    expected = rf"colour: {said} \(line {line}; value 'red'; {fix}\)"
    assert re.search(expected, message), message


def test_a_nested_key_is_found_on_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "seed.yaml"
    text = (MAPPINGS / "centres" / "seed.yaml").read_text(encoding="utf-8")
    bad = text.replace("\npatients:\n", "\npatients:\n  colour: red\n", 1)
    line = bad.splitlines().index("  colour: red") + 1
    path.write_text(bad, encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"patients\.colour: .*\(line {line}; value 'red'; fix:"):
        load_study_mapping(path)
