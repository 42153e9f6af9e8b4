"""Centre-side extracts (issue 19, item 2): what a centre sends instead of its file.

The three centres of the privacy test (their own layouts, read by the real reader) are built
once from their files and once with two of them sent as extracts: the outputs must be the
same bytes. Every extract is searched as the outputs are (identifiers, names, dates in
several renderings, free text, file names, row references)."""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from fhir_cart.errors import ConfigError
from fhir_cart.library.concepts import ConceptLibrary, load_concepts
from fhir_cart.library.terminology import load_terminology
from fhir_cart.registry.build import build_registry
from fhir_cart.registry.centre_side import extract_centre
from fhir_cart.registry.definition import load_registry
from fhir_cart.registry.extract import Shift
from fhir_cart.registry.pseudonyms import Pseudonymiser
from tests.registry_helpers import KEY
from tests.unit.registry.test_registry_privacy_files import (
    Centres,
    leaks,
    renderings,
    write_centres,
)

SENT = ("berlin", "london")


@pytest.fixture(scope="module")
def library() -> ConceptLibrary:
    return load_concepts(load_terminology())


def _extracts(folder: Path, centres: Centres, library: ConceptLibrary) -> dict[str, Path]:
    definition = load_registry(centres.registry)
    made = {}
    for centre in SENT:
        spec = definition.centre(centre)
        assert spec.data is not None
        assert spec.mapping is not None
        made[centre] = folder / f"{centre}-extract.zip"
        extract_centre(
            definition,
            centre,
            definition.resolve(spec.data),
            definition.resolve(spec.mapping),
            made[centre],
            key=KEY,
            library=library,
        )
    return made


def _with_extracts(registry: Path, made: dict[str, Path]) -> Path:
    """The same registry file, naming the sent centres' extracts instead of their files."""
    text = registry.read_text()
    for centre, path in made.items():
        text = re.sub(
            rf"\{{id: {centre}, mapping: [^,]+, data: [^,]+,",
            f"{{id: {centre}, extract: {path},",
            text,
        )
    changed = registry.with_name("registry-extracts.yaml")
    changed.write_text(text)
    return changed


def _outputs(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "state.json"  # it names the registry file's hash
    }


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
@pytest.mark.parametrize("mode", ["relative", "shift"])
def test_a_build_from_extracts_gives_the_same_links_and_outputs_as_from_files(
    tmp_path: Path, library: ConceptLibrary, mode: str
) -> None:
    centres = write_centres(tmp_path / "centres", mode)
    from_files = build_registry(
        load_registry(centres.registry), tmp_path / "files", key=KEY, library=library
    )
    made = _extracts(tmp_path, centres, library)
    registry = _with_extracts(centres.registry, made)
    assert "extract:" in registry.read_text()
    assert "berlin.csv" not in registry.read_text()
    from_extracts = build_registry(
        load_registry(registry), tmp_path / "extracts", key=KEY, library=library
    )
    assert from_files.registry is not None
    assert from_extracts.registry is not None
    assert len(from_files.registry.links) >= 8  # a real linkage, with conflicts
    assert from_files.registry.conflicts
    assert from_extracts.registry.links == from_files.registry.links
    files, extracts = _outputs(tmp_path / "files"), _outputs(tmp_path / "extracts")
    assert sorted(files) == sorted(extracts)
    assert {n for n in files if files[n] != extracts[n]} == set()


FREE_VALUE = "B-ALL laut Dr Wagner, Telefon 0176 4499123"


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_no_source_value_is_in_an_extract(tmp_path: Path, library: ConceptLibrary) -> None:
    centres = write_centres(tmp_path / "centres", "relative")
    # free text where a coded value belongs (kept by the reader as the value's text)
    berlin = tmp_path / "centres" / "berlin" / "berlin.csv"
    lines = berlin.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace(";B-ALL;", f";{FREE_VALUE};", 1)
    berlin.write_text("\n".join(lines) + "\n", encoding="utf-8")
    centres.free_text.add(FREE_VALUE)  # the reader rejects it: a reject keeps no value
    made = _extracts(tmp_path, centres, library)
    shift = Shift.of(Pseudonymiser(KEY))
    # a moved date may fall on another child's real date: that is no leak of the real one
    moved = {shift.date(d, "day") for d in centres.dates} | {
        shift.date(d, "year") for d in centres.dates
    }
    dates = {form for d in centres.dates - moved for form in renderings(d)}
    assert len(dates) > 500
    words = {w for text in centres.free_text for w in re.findall(r"[A-Za-z]{5,}", text)}
    words -= {"tisagenlecleucel"}
    needles = centres.identifiers | centres.names | dates | centres.free_text | words
    needles |= centres.files
    for centre, path in made.items():
        with zipfile.ZipFile(path) as archive:
            assert sorted(archive.namelist()) == ["manifest.json", "records.json"]
            text = "\n".join(archive.read(n).decode() for n in archive.namelist())
            records = orjson.loads(archive.read("records.json"))["records"]
        assert len(records) >= 8, centre  # the centre's records are there
        assert leaks(text, needles) == [], centre
        assert re.findall(r"(?i)\b(?:row|sheet) \d+", text) == [], centre
        # what the build compares is there, in keyed form
        assert all(r["identifiers"] for r in records)
        assert all(re.fullmatch(r"s[0-9a-f]{32}", t) for r in records for t in r["rows"].values())


def test_the_manifest_names_format_centre_and_key_but_not_the_key(
    tmp_path: Path, library: ConceptLibrary
) -> None:
    centres = write_centres(tmp_path / "centres", "relative")
    made = _extracts(tmp_path, centres, library)
    with zipfile.ZipFile(made["berlin"]) as archive:
        manifest = orjson.loads(archive.read("manifest.json"))
    assert manifest["format"] == "fhir-cart-registry-extract"
    assert manifest["version"] == 1
    assert manifest["centre"] == "berlin"
    assert manifest["registry"] == "privacy"
    assert manifest["key_fingerprint"] == Pseudonymiser(KEY).fingerprint()
    assert KEY.decode() not in made["berlin"].read_bytes().decode("latin-1")
    # the same inputs and key give the same bytes
    again = tmp_path / "again.zip"
    definition = load_registry(centres.registry)
    spec = definition.centre("berlin")
    assert spec.data is not None
    assert spec.mapping is not None
    extract_centre(
        definition,
        "berlin",
        definition.resolve(spec.data),
        definition.resolve(spec.mapping),
        again,
        key=KEY,
        library=library,
    )
    assert again.read_bytes() == made["berlin"].read_bytes()


def test_an_extract_under_another_key_or_for_another_centre_is_refused(
    tmp_path: Path, library: ConceptLibrary
) -> None:
    centres = write_centres(tmp_path / "centres", "relative")
    made = _extracts(tmp_path, centres, library)
    registry = load_registry(_with_extracts(centres.registry, made))
    other = b"another-key-not-secret-0123456789abcdef"
    with pytest.raises(ConfigError, match=r"berlin-extract\.zip: made under another registry key"):
        build_registry(registry, tmp_path / "out", key=other, library=library)
    swapped = _with_extracts(centres.registry, {"berlin": made["london"], "london": made["berlin"]})
    with pytest.raises(ConfigError, match=r"made for centre 'london'.*names it for 'berlin'"):
        build_registry(load_registry(swapped), tmp_path / "out2", key=KEY, library=library)


def test_a_registry_file_names_a_centre_by_data_and_mapping_or_by_extract(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "registry.yaml"
    bad.write_text("name: x\ncentres:\n  - {id: a, data: a.csv}\n")
    with pytest.raises(ConfigError, match="give its data and mapping, or the extract it sent"):
        load_registry(bad)
    bad.write_text("name: x\ncentres:\n  - {id: a, data: a.csv, mapping: a.yaml, extract: a.zip}\n")
    with pytest.raises(ConfigError, match="not both"):
        load_registry(bad)


def test_registry_extract_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_cart.cli.registry import registry_app

    centres = write_centres(tmp_path / "centres", "relative")
    monkeypatch.setenv("FHIR_CART_REGISTRY_KEY", KEY.decode())
    folder = tmp_path / "centres"
    out = tmp_path / "sent" / "berlin.zip"
    result = CliRunner().invoke(
        registry_app,
        [
            "extract",
            str(folder / "berlin" / "berlin.csv"),
            "--mapping",
            str(folder / "mappings" / "berlin.yaml"),
            "--registry",
            str(centres.registry),
            "--centre",
            "berlin",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "16 records" in result.output
    assert Pseudonymiser(KEY).fingerprint() in result.output
    assert out.exists()
    wrong = CliRunner().invoke(
        registry_app,
        [
            "extract",
            str(folder / "berlin" / "berlin.csv"),
            "--mapping",
            str(folder / "mappings" / "berlin.yaml"),
            "--registry",
            str(centres.registry),
            "--centre",
            "paris",
            "--out",
            str(out),
        ],
    )
    assert wrong.exit_code != 0
    assert "no centre paris" in str(wrong.exception) + wrong.output


def test_a_moved_date_comes_back_exactly(tmp_path: Path) -> None:
    shift = Shift.of(Pseudonymiser(KEY))
    assert shift.days != 0
    assert shift.years != 0
    for day in (dt.date(2020, 2, 29), dt.date(2019, 12, 31), dt.date(2001, 1, 1)):
        assert shift.date(shift.date(day, "day"), "day", back=True) == day
        assert shift.date(day, "day") != day
    year = dt.date(2019, 1, 1)
    assert shift.date(year, "year").month == 1
    assert shift.date(year, "year").day == 1
    assert shift.date(shift.date(year, "year"), "year", back=True) == year


def test_open_text_leaves_only_as_a_keyed_token_and_a_measurement_as_written() -> None:
    """Text the reader kept (a value's own text, a source word, an event's status) that the
    screen refuses is a keyed token, the same at every centre; a number's text stays."""
    from fhir_cart.records import Case, Event, PatientRecord, Value, When
    from fhir_cart.registry.definition import RegistryDef
    from fhir_cart.registry.extract import seal

    free = "seen by Dr Wagner on 07.03.2019"
    events = (
        Event(
            event_id="d1",
            concept="diagnosis",
            value=Value(text=free),
            source_text=free,
            when=When(date=dt.date(2019, 3, 7)),
            status=free,
        ),
        Event(event_id="m1", concept="weight", value=Value(number=125000.0), source_text="125.000"),
    )
    case = Case(patient=PatientRecord(study_id="B-1", centre="berlin"), events=events)
    definition = RegistryDef.model_validate(
        {"name": "x", "centres": [{"id": "berlin", "extract": "b.zip"}]}
    )
    key = Pseudonymiser(KEY)
    one = seal("berlin", [case], [], [], {}, definition, key, None)
    other = seal(
        "london",
        [case.model_copy(update={"patient": case.patient.model_copy(update={"centre": "london"})})],
        [],
        [],
        {},
        definition,
        key,
        None,
    )
    sealed = one.cases[0].events
    text = repr(one)
    assert "Wagner" not in text
    assert "07.03.2019" not in text
    assert "2019-03-07" not in text
    assert sealed[0].value is not None
    assert sealed[0].value.text is not None
    assert re.fullmatch(r"#\d{24}", sealed[0].value.text)
    assert sealed[0].source_text == sealed[0].status == sealed[0].value.text
    assert other.cases[0].events[0].source_text == sealed[0].source_text  # centre-independent
    assert sealed[1].source_text == "125.000"  # five digits: the screen alone refuses it


def test_a_date_attribute_moves_and_one_that_is_no_date_is_withheld() -> None:
    from fhir_cart.registry.extract import _attributes

    key = Pseudonymiser(KEY)
    shift = Shift.of(key)
    found = _attributes(
        {"relapse_date": "2019-05-14", "surgery_date": "05/2019", "stage": 2},
        key,
        shift,
        {"relapse_date", "surgery_date"},
        set(),
    )
    assert found["relapse_date"] == shift.date(dt.date(2019, 5, 14), "day").isoformat()
    assert re.fullmatch(r"#\d{24}", str(found["surgery_date"]))
    assert found["stage"] == 2


@pytest.mark.slow  # several seconds: the full suite runs it, not the fast loop
def test_a_changed_extract_is_built_again(tmp_path: Path, library: ConceptLibrary) -> None:
    centres = write_centres(tmp_path / "centres", "relative")
    made = _extracts(tmp_path, centres, library)
    registry = load_registry(_with_extracts(centres.registry, made))
    first = build_registry(registry, tmp_path / "out", key=KEY, library=library)
    assert first.registry is not None
    assert build_registry(registry, tmp_path / "out", key=KEY, library=library).skipped
    # the same centre file, but the extract holds one record fewer (its manifest unchanged)
    with zipfile.ZipFile(made["berlin"]) as archive:
        manifest, raw = archive.read("manifest.json"), orjson.loads(archive.read("records.json"))
    raw["records"] = raw["records"][:-1]
    with zipfile.ZipFile(made["berlin"], "w") as archive:
        archive.writestr("manifest.json", manifest)
        archive.writestr("records.json", orjson.dumps(raw))
    again = build_registry(registry, tmp_path / "out", key=KEY, library=library)
    assert not again.skipped
    assert again.registry is not None
    assert again.registry.centre_records["berlin"] == first.registry.centre_records["berlin"] - 1


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_registry_event_ids_are_those_of_the_clear_records(tmp_path: Path) -> None:
    """The build works on sealed records, yet names every event as it named it from the
    clear ones (a server the registry was pushed to keeps its resources)."""
    from fhir_cart.registry.merge import registry_event_namer
    from tests.registry_helpers import definition, reader_of, three_centres

    cases = three_centres()
    built = build_registry(definition(tmp_path), tmp_path / "out", key=KEY, reader=reader_of(cases))
    assert built.registry is not None
    namer = registry_event_namer(Pseudonymiser(KEY).token)
    expected = {
        namer(centre, case.patient.study_id, event)
        for centre, centre_cases in cases.items()
        for case in centre_cases
        for event in case.events
    }
    found = {e.event_id for case in built.registry.cases for e in case.events}
    assert found
    assert found <= expected


def test_sealing_in_place_is_sealing_and_moving_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A build from a file seals its records with the dates left in place (one pass):
    that must be exactly what sealing and moving the dates back gives (ISO dates written
    another way, partial dates and values that are no date included)."""
    from fhir_cart.records import Case, Event, PatientRecord, When
    from fhir_cart.registry import extract
    from fhir_cart.registry.definition import RegistryDef
    from fhir_cart.registry.extract import seal, unseal

    # the concept library has no date attribute yet: a mapping's own concepts may have
    monkeypatch.setattr(extract, "_date_attributes", lambda _: {"relapse_date", "surgery_date"})
    events = (
        Event(
            event_id="d1",
            concept="diagnosis",
            when=When(date=dt.date(2019, 3, 7)),
            attributes={"relapse_date": "20190514", "surgery_date": "05/2019"},
        ),
        Event(
            event_id="h1",
            concept="hsct",
            when=When(date=dt.date(2020, 1, 1), precision="year"),
            end=When(date=dt.date(2020, 2, 29)),
        ),
    )
    case = Case(
        patient=PatientRecord(
            study_id="B-1",
            centre="berlin",
            birth_date=dt.date(2012, 2, 29),
            attributes={"relapse_date": "2019-05-14"},
        ),
        events=events,
    )
    definition = RegistryDef.model_validate(
        {"name": "x", "centres": [{"id": "berlin", "extract": "b.zip"}]}
    )
    key = Pseudonymiser(KEY)
    args = ("berlin", [case], [], [], {"B-1": {"": "f, row 2"}}, definition, key, None)
    in_place = seal(*args, moved=False)
    assert in_place == unseal(seal(*args), key)
    assert in_place.cases[0].events[0].when == events[0].when
    assert in_place.cases[0].patient.study_id != "B-1"
    assert in_place.cases[0].patient.attributes["relapse_date"] == "2019-05-14"
    assert str(in_place.cases[0].events[0].attributes["surgery_date"]).startswith("#")
