"""The documentation's worked example runs as written."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import yaml
from openpyxl import Workbook

from fhir_cart.readers import read_study
from fhir_cart.study_mapping import StudyMapping, load_study_mapping
from tests.conftest import ROOT


def _worked_example_mapping() -> str:
    text = (ROOT / "docs" / "mapping-file.md").read_text()
    section = text.split("## Worked example", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_worked_example_in_the_mapping_reference(tmp_path: Path) -> None:
    mapping_file = tmp_path / "st-elsewhere.yaml"
    mapping_file.write_text(_worked_example_mapping())
    mapping = load_study_mapping(mapping_file)
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Cohort"
    sheet.append(["UPN", "Gender", "Infusion", "MRD d28", "Relapse (day)", "CD19 at relapse"])
    sheet.append([17, "F", "12/03/2022", "neg", None, None])
    sheet.append([23, "M", "02/05/2022", "0.02%", 180, "negative"])
    book.save(tmp_path / "cohort.xlsx")
    result = read_study(tmp_path / "cohort.xlsx", mapping)
    assert result.rejects == []
    first, second = sorted(result.cases, key=lambda c: c.patient.study_id)
    assert first.patient.study_id == "17"
    assert first.statuses == ()
    (mrd,) = second.mrd
    assert (mrd.value, mrd.unit, mrd.when.day, mrd.when.date) == (
        0.02,
        "%",
        28,
        dt.date(2022, 5, 30),
    )
    (relapse,) = second.statuses
    assert (relapse.status, relapse.cd19, relapse.when.day) == ("relapse", "negative", 180)


def test_canonical_mapping_file_matches_the_code() -> None:
    from fhir_cart.writers import canonical_mapping

    on_disk = yaml.safe_load((ROOT / "mappings" / "centres" / "canonical.yaml").read_text())
    assert StudyMapping.model_validate(on_disk) == canonical_mapping("canonical")


def test_every_shipped_mapping_loads() -> None:
    for path in (ROOT / "mappings" / "centres").glob("*.yaml"):
        assert load_study_mapping(path).centre


def test_cli_reference_names_every_command_and_option() -> None:
    import typer
    from typer.core import TyperGroup

    from fhir_cart.cli import app

    doc = (ROOT / "docs" / "cli.md").read_text()
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    commands = dict(group.commands)
    for name, command in group.commands.items():  # sub-commands: fhir-server start|stop
        if isinstance(command, TyperGroup):
            del commands[name]
            commands.update({f"{name} {sub}": c for sub, c in command.commands.items()})
    missing = [
        f"{name} {option}"
        for name, command in commands.items()
        for param in command.params
        for option in param.opts
        if option.startswith("--") and option != "--help" and option not in doc
    ]
    missing += [name for name in group.commands if not re.search(rf"## `fhir-cart {name}\b", doc)]
    missing += [o for p in group.params for o in p.opts if o != "--help" and o not in doc]
    assert missing == [], f"docs/cli.md does not mention: {missing}"
