"""Pure parts of the registry: pseudonyms and date transforms, the quality report, the
registry file's rules."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from fhir_cart.errors import ConfigError, Reject
from fhir_cart.library.concepts import load_concepts
from fhir_cart.library.terminology import load_terminology
from fhir_cart.records import Case, Event, PatientRecord, Value, When
from fhir_cart.registry.definition import RegistryDef
from fhir_cart.registry.pseudonyms import DateTransform, Pseudonymiser, registry_key
from fhir_cart.registry.quality import centre_quality

KEY = Pseudonymiser(b"unit-test-key-0123456789abcdef0123")


def test_pseudonyms_are_keyed_namespaced_and_normalised() -> None:
    other = Pseudonymiser(b"unit-test-key-0123456789abcdef0124")
    assert KEY.patient("berlin", "B-01") != other.patient("berlin", "B-01")
    assert KEY.patient("berlin", "B-01") != KEY.patient("london", "B-01")
    assert KEY.identifier("national_id", "12 34-5") == KEY.identifier("national_id", "12345")
    assert KEY.identifier("national_id", "12345") != KEY.identifier("other_id", "12345")
    assert "unit-test-key" not in repr(KEY)


def test_offsets_are_never_zero_and_stay_in_range() -> None:
    offsets = {KEY.offset(f"r{n}", 30) for n in range(2000)}
    assert 0 not in offsets
    assert min(offsets) == -30
    assert max(offsets) == 30


def test_relative_dates() -> None:
    transform = DateTransform("relative", "diagnosis", anchor_date=dt.date(2020, 1, 10))
    assert transform.when(When(date=dt.date(2020, 1, 1))) == When(day=-9, anchor="diagnosis")
    kept = When(date=dt.date(2020, 2, 1), day=28, anchor="cart_infusion")
    assert transform.when(kept) == When(day=28, anchor="cart_infusion")
    window = When(latest_day=-1, anchor="hsct")
    assert transform.when(window) == window
    assert transform.date(dt.date(2012, 5, 14)) is None
    no_anchor = DateTransform("relative", "diagnosis")
    assert no_anchor.when(When(date=dt.date(2020, 1, 1))) is None


def test_shifted_dates() -> None:
    transform = DateTransform("shift", "diagnosis", offset=-12)
    assert transform.when(When(date=dt.date(2020, 1, 10))) == When(date=dt.date(2019, 12, 29))
    assert transform.iso("2020-01-10") == "2019-12-29"


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_CART_REGISTRY_KEY", "k" * 40)
    assert registry_key() == b"k" * 40
    assert registry_key("s" * 32) == b"s" * 32
    monkeypatch.delenv("FHIR_CART_REGISTRY_KEY")
    with pytest.raises(ConfigError, match="no registry key"):
        registry_key()


def test_quality_report() -> None:
    library = load_concepts(load_terminology())
    events = (
        Event(
            event_id="b1",
            concept="marrow_blasts",
            when=When(date=dt.date(2020, 1, 1)),
            value=Value(number=120, unit="%"),
            source_text="120",
        ),
        Event(
            event_id="c1",
            concept="cyclophosphamide",
            when=When(date=dt.date(2020, 1, 2)),
            value=Value(number=1500, unit="mg/m2"),
            source_text="1,5 g/m²",
        ),
        Event(event_id="k1", concept="chemotherapy", attributes={"regimen": "local block X"}),
    )
    cases = [
        Case(patient=PatientRecord(study_id="A", centre="c", sex="female"), events=events),
        Case(patient=PatientRecord(study_id="B", centre="c")),
    ]
    bad = Reject(
        "c.csv", 4, "Diagnosedatum", "14.05.2012", "'14.05.2012' is not a date", table="diagnosis"
    )
    report = centre_quality("c", cases, library=library, pseudonyms=KEY, rejects=[bad])
    assert report.completeness["sex"] == 0.5
    assert report.completeness["cyclophosphamide.value"] == 0.5
    assert report.out_of_range == [
        {
            "patient": KEY.patient("c", "A"),
            "field": "marrow_blasts",
            "allowed": [0, 100],
            "direction": "above",
        }
    ]
    assert report.conversions == {"cyclophosphamide: g/m² -> mg/m2": 1}
    assert report.unmapped_words == {"chemotherapy.regimen: (withheld)": 1}
    assert report.rejects == {"diagnosis.Diagnosedatum": 1}
    assert "14.05.2012" not in repr(report.as_dict())


@pytest.mark.parametrize(
    ("word", "shown"),
    [
        ("local block x", "local block x"),
        ("local block for Anna", "(withheld)"),
        ("block 14.05.2012", "(withheld)"),
        ("block 4711081542", "(withheld)"),
    ],
)
def test_quality_shows_a_kept_words_only_when_it_passes_the_screen(word: str, shown: str) -> None:
    library = load_concepts(load_terminology())
    event = Event(event_id="k1", concept="chemotherapy", attributes={"regimen": word})
    cases = [Case(patient=PatientRecord(study_id="A", centre="c"), events=(event,))]
    report = centre_quality("c", cases, library=library, pseudonyms=KEY, keep_text=["regimen"])
    assert report.unmapped_words == {f"chemotherapy.regimen: {shown}": 1}


def registry(**overrides: object) -> RegistryDef:
    raw: dict[str, object] = {
        "name": "r",
        "centres": [
            {"id": "a", "mapping": "a.yaml", "data": "a.csv", "roles": ["referring"]},
            {"id": "b", "mapping": "b.yaml", "data": "b.csv", "roles": ["treating"]},
            {"id": "c", "mapping": "c.yaml", "data": "c.csv", "roles": ["treating"]},
        ],
        "base_dir": Path(),
    }
    return RegistryDef.model_validate(raw | overrides)


def test_preference_order() -> None:
    found = registry(
        conflicts={"default": ["c"], "rules": [{"field": "cart_infusion", "prefer": ["treating"]}]}
    )
    assert found.preference("cart_infusion") == (["c", "b", "a"], "prefer treating")
    assert found.preference("sex") == (["c", "a", "b"], "default order c, a, b")
    assert found.single_concepts() == {"cart_infusion"}


def test_a_rule_must_name_a_centre_or_role() -> None:
    with pytest.raises(ValueError, match="neither a centre nor a role"):
        registry(conflicts={"rules": [{"field": "sex", "prefer": "nobody"}]})


def test_public_names() -> None:
    import fhir_cart.registry as registry

    assert registry.__all__ == [
        "BuildResult",
        "CentreData",
        "Pseudonymiser",
        "Registry",
        "RegistryDef",
        "build_registry",
        "load_registry",
        "registry_key",
    ]


def test_concept_map_words_for_values_and_for_concepts() -> None:
    from fhir.resources.R4B.conceptmap import ConceptMap

    from fhir_cart.registry.fhir import concept_map, local_words

    library = load_concepts(load_terminology())
    events = (
        Event(event_id="m", concept="mrd", value=Value(code="negative"), source_text="neg"),
        Event(event_id="c", concept="cart_infusion", source_text="CAR-T infusion"),
        Event(event_id="q", concept="mrd", value=Value(number=0.1, unit="%"), source_text="0,1 %"),
    )
    cases = [Case(patient=PatientRecord(study_id="A", centre="c"), events=events)]
    words = local_words(cases, library)
    assert words == {
        ("concept", "CAR-T infusion"): "cart_infusion",
        ("mrd_result", "neg"): "negative",
    }
    found = concept_map("reg", "c", words, "https://r.example.org", library)
    ConceptMap.model_validate(found)
    targets = {e["code"]: e["target"][0]["code"] for g in found["group"] for e in g["element"]}
    infusion = library.codeable("cart_infusion")["coding"][0]["code"]
    negative = library.terminology.concept("mrd_result", "negative")["coding"][0]["code"]
    assert targets == {"CAR-T infusion": infusion, "neg": negative}


def _typed_library():  # type: ignore[no-untyped-def]
    from fhir_cart.library.concepts import AttributeDef, ConceptsFile

    extra = ConceptsFile(
        patient_attributes={
            "insurance_number": AttributeDef(label="Insurance number", type="integer"),
            "hospital": AttributeDef(label="Hospital", type="coded", value_set="cart_product"),
            "chart_number": AttributeDef(label="Chart number", type="number"),
        }
    )
    return load_concepts(load_terminology(), extra=extra)


def test_identifiers_are_dropped_whatever_their_type() -> None:
    """An integer or coded identifier is data by type: only the linkage list and
    ``drop_patient_attributes`` keep it out (mutation protect.py:68)."""
    from fhir_cart.registry.protect import Protection

    definition = registry(
        linkage={"identifiers": ["insurance_number", "hospital"]},
        pseudonymisation={"drop_patient_attributes": ["chart_number"]},
    )
    protection = Protection(definition, KEY, _typed_library())
    attributes = {
        "insurance_number": 4711081542,
        "hospital": "tisagenlecleucel",
        "chart_number": 120455.0,
        "age_at_diagnosis": 7.5,
    }
    case = Case(patient=PatientRecord(study_id="A", centre="a", attributes=attributes))
    kept = protection.case(case, protection.transform_for(case))
    assert kept.patient.attributes == {"age_at_diagnosis": 7.5}


@pytest.mark.parametrize(
    ("word", "kept"),
    [
        ("14.05.2012", False),
        ("2012-05-14", False),
        ("14 May 2012", False),
        ("neg", True),
        ("<0,01 %", True),
        ("seen by Dr Anna Kowalski", False),
        ("4711 0815 42", False),
    ],
)
def test_source_words_that_hold_a_date_name_or_number_are_dropped(word: str, kept: bool) -> None:
    """Mutation protect.py:92 (date-like source words kept)."""
    from fhir_cart.registry.protect import Protection

    protection = Protection(registry(), KEY, load_concepts(load_terminology()))
    event = Event(event_id="m", concept="mrd", value=Value(code="negative"), source_text=word)
    case = Case(patient=PatientRecord(study_id="A", centre="a"), events=(event,))
    [shown] = protection.case(case, protection.transform_for(case)).events
    assert (shown.source_text == word) is kept
    assert shown.value == Value(code="negative")


def test_identifier_links_win_over_probabilistic_ones_of_equal_probability() -> None:
    """Mutation linkage.py:130: sorted by probability and name only, the probabilistic a-b
    (p = 1.0, named first) would be taken and the identifier link a-c refused."""
    from fhir_cart.registry.linkage import Link, LinkRecord, cluster

    records = [LinkRecord("x", "a"), LinkRecord("y", "b"), LinkRecord("y", "c")]
    links = [Link("a", "b", 1.0, "probabilistic"), Link("a", "c", 1.0, "identifier")]
    found = cluster(records, links, 0.9)
    assert found.patient_of["a"] == found.patient_of["c"] != found.patient_of["b"]
    assert found.refused == [Link("a", "b", 1.0, "probabilistic")]


@pytest.mark.parametrize("mode", ["relative", "shift"])
def test_a_date_attribute_in_a_conflict_is_shown_as_the_table_holds_it(mode: str) -> None:
    from fhir_cart.library.concepts import AttributeDef, ConceptsFile
    from fhir_cart.registry.merge import Conflict
    from fhir_cart.registry.protect import Protection

    extra = ConceptsFile(
        patient_attributes={"enrolled": AttributeDef(label="Enrolled on", type="date")}
    )
    library = load_concepts(load_terminology(), extra=extra)
    protection = Protection(registry(pseudonymisation={"dates": mode}), KEY, library)
    conflict = Conflict(
        "r1", "attributes.enrolled", {"a": "2019-03-07", "b": "2019-03-09"}, "prefer a", "a"
    )
    case = Case(patient=PatientRecord(study_id="r1", centre="r"))
    shown = protection.conflict(conflict, protection.transform_for(case))
    assert not {"2019-03-07", "2019-03-09"} & set(shown.values())
    if mode == "relative":
        assert set(shown.values()) == {"(withheld)"}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Kymriah lot 12 for Anna Kowalski born 14 May 2012", "date"),
        ("14.05.2012", "date"),
        ("5/14/12", "date"),
        ("Mai 2012", "date"),
        ("since 2019", "date"),
        ("A123456789", "identifier-like number"),
        ("0176 4400012", "identifier-like number"),
        ("seen by Dr Wagner", "name-like word"),
        ("for anna Kowalski", "name-like word"),
        ("Kymriah", None),
        ("tisagenlecleucel", None),
        ("CAR-T infusion", None),
        ("0.5 g/m2", None),
        ("<0,01 %", None),
        ("lot 12", None),
        ("Rezidiv/refraktaer", None),
    ],
)
def test_the_open_text_screen(text: str, why: str | None) -> None:
    from fhir_cart.registry.screen import refusal

    assert refusal(text) == why


def test_pseudonyms_and_bloom_filters_stay_what_a_key_gave_before() -> None:
    """The same key gives the same pseudonyms and name filters (a faster HMAC call and
    cached bigram bits must not change one bit): checked against the plain definitions."""
    import hashlib
    import hmac

    from fhir_cart.registry.names import BLOOM_HASHES, bloom

    key = b"unit-test-key-0123456789abcdef0123"
    message = b"patient\x1fberlin\x1fB-01"
    assert KEY.patient("berlin", "B-01") == "p" + hmac.new(key, message, "sha256").hexdigest()[:32]
    words = [0, 0, 0, 0]
    for gram in ("_m", "mu", "ul", "ll", "le", "er", "r_"):
        digest = hashlib.blake2b(gram.encode(), key=key, digest_size=BLOOM_HASHES).digest()
        for byte in digest:
            words[byte // 64] |= 1 << (byte % 64)
    signed = [w - (1 << 64) if w >= 1 << 63 else w for w in words]
    for _ in range(2):  # the second time from the cache
        assert bloom("muller", key) == ".".join(str(w) for w in signed)
