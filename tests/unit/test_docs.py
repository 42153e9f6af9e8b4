"""The documentation's worked example runs as written."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import yaml
from openpyxl import Workbook

from fhir_cart.library.study_mapping import StudyMapping, load_study_mapping
from fhir_cart.records import Case, Value, When
from fhir_cart.study import read_study
from tests.support import ROOT


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
    sheet.append(
        [
            "UPN",
            "Gender",
            "Infusion",
            "Cyclo dose",
            "MRD d28",
            "MRD before HSCT",
            "Relapse (day)",
            "CD19 at relapse",
            "Comment",
        ]
    )
    sheet.append([17, "F", "12/03/2022", "1,5 g/m²", "neg", None, None, None, None])
    sheet.append(
        [23, "M", "02/05/2022", 500, "0.02%", "negative", 180, "negative", "second opinion"]
    )
    book.save(tmp_path / "cohort.xlsx")
    result = read_study(tmp_path / "cohort.xlsx", mapping)
    assert result.rejects == []
    assert result.unmapped_columns == []
    first, second = sorted(result.cases, key=lambda c: c.patient.study_id)
    assert (first.patient.study_id, first.patient.sex) == ("17", "female")
    assert [e.event_id for e in first.events] == ["infusion", "cyclophosphamide", "mrd-d28"]
    (infusion,) = first.of("cart_infusion")
    assert infusion.when == When(date=dt.date(2022, 3, 12), day=0, anchor="cart_infusion")
    (cyclo,) = first.of("cyclophosphamide")
    assert cyclo.value == Value(number=1500.0, unit="mg/m2")
    assert cyclo.when == When(earliest_day=-6, latest_day=-3, anchor="cart_infusion")
    (mrd,) = first.of("mrd")
    assert (mrd.value, mrd.when) == (
        Value(code="negative"),
        When(date=dt.date(2022, 4, 9), day=28, anchor="cart_infusion"),
    )
    assert second.of("cyclophosphamide")[0].value == Value(number=500.0, unit="mg/m2")
    d28, before_hsct = second.of("mrd")
    assert (d28.value, d28.when.date if d28.when else None) == (
        Value(number=0.02, unit="%"),
        dt.date(2022, 5, 30),
    )
    assert (before_hsct.value, before_hsct.when) == (
        Value(code="negative"),
        When(latest_day=-1, anchor="hsct"),
    )
    (relapse,) = second.of("disease_status")
    assert (relapse.value, relapse.attributes) == (Value(code="relapse"), {"cd19": "negative"})
    assert relapse.when == When(date=dt.date(2022, 10, 29), day=180, anchor="cart_infusion")


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


def test_design_excerpts_in_the_mapping_reference_are_the_shipped_files() -> None:
    """The three-designs section quotes the shipped mapping files: each excerpt must still be
    in the file its heading names, and each file must read its fixture cleanly."""
    text = (ROOT / "docs" / "mapping-file.md").read_text()
    section = text.split("## Three designs, three mapping files", 1)[1]
    checked = 0
    for part in section.split("\n### ")[1:]:
        name = re.search(r"`(mappings/centres/[a-z_]+\.yaml)`", part.splitlines()[0])
        assert name is not None, part.splitlines()[0]
        shipped = (ROOT / name.group(1)).read_text()
        for block in re.findall(r"```yaml\n(.*?)```", part, re.S):
            assert block in shipped, f"{name.group(1)} no longer holds:\n{block}"
            checked += 1
    assert checked >= 5


def test_worked_example_of_the_study_file_reference_reproduces_its_numbers(
    seed_cases: list[Case],
) -> None:
    from fhir_cart.library.studies import parse_study
    from fhir_cart.report.evaluate import summarise

    text = (ROOT / "docs" / "study-file.md").read_text()
    section = text.split("## Worked example", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match is not None
    study = parse_study(yaml.safe_load(match.group(1)))
    results = summarise(seed_cases, study)
    assert len(study.expected) == 5
    assert {r.id: r.value for r in results if r.expected is not None} == study.expected


def _readme_layout() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout\n", 1)[1]
    match = re.search(r"```\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_readme_layout_names_every_package_module_and_top_folder() -> None:
    """The README's layout is complete: every package of src/fhir_cart (as ``name/``), every
    module at its top, every tracked top-level folder."""
    layout = _readme_layout()
    words = set(re.findall(r"\.?[A-Za-z_][\w.-]*/?", layout))
    src = ROOT / "src" / "fhir_cart"
    packages = {p.parent.name for p in src.glob("*/__init__.py")}
    modules = {p.stem for p in src.glob("*.py")} - {"__init__"}
    folders = {"api", "benchmarks", "docs", "fixtures", "mappings", "scripts", "tests", ".ci"}
    assert {f"{p}/" for p in packages} - words == set()
    assert {m for m in modules if m not in words and f"{m}.py" not in words} == set()
    assert {f"{f}/" for f in folders} - words == set()
