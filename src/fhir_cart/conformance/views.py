"""The study tables as SQL-on-FHIR v2 ViewDefinitions, generated from the concept library.

``fhir-cart views --out DIR`` writes one ViewDefinition per table: ``patients`` (Patient)
and one ``events_<kind>`` view per concept kind and the resource type fhir_cart writes it
as (``events_observation`` over Observation, ``events_death`` over Patient, ...). Every code,
URL and value set in them comes from the same data the mappers read (``mappings/
concepts.yaml``, ``terminology.yaml``, ``statuses.yaml``, ``profiles.yaml`` and the centre
mappings' identifier systems): there is no second, hand-written copy.

A view gives the columns of fhir_cart's table that FHIRPath can express, named as the table
names them, plus the keys to join them (``patient_key``: ``getResourceKey()`` of the
Patient, ``getReferenceKey(Patient)`` of an event's subject). What it cannot express is
listed in :data:`NOT_EXPRESSED` (and docs/cli.md, "fhir-cart views"): a SQL-on-FHIR engine
gives the rows of those columns only approximately or not at all. The FHIRPath used is the
SQL-on-FHIR v2 set plus ``iif``, ``startsWith`` and string ``+`` (all three supported by
Pathling, fhir4ds and the reference implementation).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_cart.concepts import AttributeDef, ConceptDef
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.to_fhir import ID_KINDS, attribute_url
from fhir_cart.statuses import StatusTable, statuses_in
from fhir_cart.terminology import Coding

__all__ = [
    "NOT_EXPRESSED",
    "SHAPES",
    "VIEW_TYPE",
    "Centre",
    "centres_in",
    "fhirpath_string",
    "view_definitions",
    "write_views",
]

Json = dict[str, Any]

VIEW_TYPE = "https://sql-on-fhir.org/ig/StructureDefinition/ViewDefinition"
"""``resourceType`` of a ViewDefinition: the logical model's URL (SQL on FHIR 2.0.0)."""

NOT_EXPRESSED: dict[str, str] = {
    "patients.study_id": "a Patient with no fhir_cart identifier of a known centre gets its "
    "resource id, as fhir_cart does; ids that are not valid FHIR ids (fhir_cart makes them "
    "safe) are given as they are",
    "patients.centre": "only the centres of the mappings folder are named; a patient under "
    "another centre's identifier system gets the default centre",
    "patients.age_at_diagnosis": "the number as written; fhir_cart converts other units to "
    "the attribute's first unit",
    "events.study_id": "join the event's patient_key with patients.patient_key",
    "events.event_id": "the view gives the identifier whole, '<study_id>/<event_id>' (no "
    "string slicing in FHIRPath's SQL-on-FHIR set), or '<kind>-<resource id>'; fhir_cart "
    "shortens an id over 64 characters to its first 55, '-' and 8 hex digits of its SHA-256",
    "events.concept": "by exact codings (and prefix codings) of the library; fhir_cart also "
    "reads text-only codes (classify_by_text), refuses a resource whose codings fit two "
    "concepts (the view gives both rows), and reads drugs given by medicationReference",
    "events.when_date": "the dateTime as written; the table holds its day (the first 10 "
    "characters)",
    "events.when_anchor": "the anchor is a concept classified by its codings: not given",
    "events.value_code": "by exact and prefix codings; not the rules for broader words and "
    "codings that fit several words; an Observation's coded result given in interpretation "
    "is not read",
    "events.status": "excluded statuses are filtered out (where); the flags are not given",
    "events.specimen": "a Specimen (contained or referenced) is read through a reference: "
    "not given",
    "events.interpretation": "not given",
    "events.origin": "not given for resources fhir_cart did not write",
}
"""Table column -> what its view cannot express (docs/cli.md repeats it)."""


@dataclass(frozen=True, slots=True)
class Centre:
    """A centre whose identifier systems the views recognise: ``<base>/<name>/<kind>``."""

    name: str
    base: str

    def system(self, kind: str) -> str:
        return f"{self.base.rstrip('/')}/{self.name}/{kind}"


@dataclass(frozen=True, slots=True)
class Shape:
    """Where one resource type keeps what an event's columns need (from_fhir reads the
    same elements)."""

    resource: str
    kind: str
    code: str
    when: tuple[str, ...]
    end: tuple[str, ...] = ()
    value: str = "none"
    """``result`` (value[x] of an Observation), ``dose`` (a MedicationAdministration's)."""


SHAPES: tuple[Shape, ...] = (
    Shape("Condition", "condition", "code", ("onset.ofType(dateTime)",),
          ("abatement.ofType(dateTime)",)),
    Shape("MedicationAdministration", "medication", "medication.ofType(CodeableConcept)",
          ("effective.ofType(dateTime)", "effective.ofType(Period).start"),
          ("effective.ofType(Period).end",), "dose"),
    Shape("Procedure", "procedure", "code",
          ("performed.ofType(dateTime)", "performed.ofType(Period).start"),
          ("performed.ofType(Period).end",)),
    Shape("Observation", "observation", "code",
          ("effective.ofType(dateTime)", "effective.ofType(Period).start"),
          ("effective.ofType(Period).end",), "result"),
    Shape("AdverseEvent", "adverse_event", "event", ("date",)),
)  # fmt: skip
"""The event kinds read from their own resource type (death and follow-up are Patient's)."""


def fhirpath_string(text: str) -> str:
    """A FHIRPath string literal (FHIRPath 1.0 §Literals: ``\\`` and ``'`` escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _column(name: str, path: str, kind: str | None = None) -> Json:
    column: Json = {"name": name, "path": path}
    if kind is not None:
        column["type"] = kind
    return column


def _first(paths: Sequence[str], suffix: str = "") -> str:
    """The first of ``paths`` that exists (then ``suffix`` applied to it), as FHIRPath."""
    expr = paths[-1] + suffix
    for path in reversed(paths[:-1]):
        expr = f"iif({path}.exists(), {path}{suffix}, {expr})"
    return expr


# -- codings ----------------------------------------------------------------------------------


def _coding_test(ctx: MappingContext, codings: Iterable[Coding]) -> list[str]:
    out = []
    for coding in codings:
        system = fhirpath_string(ctx.terminology.system(coding.system))
        code = fhirpath_string(coding.code)
        test = f"code.startsWith({code})" if coding.prefix else f"code = {code}"
        out.append(f"(system = {system} and {test})")
    return out


def _matches(tests: Sequence[str]) -> str | None:
    """``coding.where(...).exists()`` over the tests (None: nothing to match)."""
    return f"coding.where({' or '.join(tests)}).exists()" if tests else None


def _concept_match(ctx: MappingContext, key: str, concept: ConceptDef) -> str | None:
    local = f"(system = {fhirpath_string(ctx.concepts.local_system)} and code = "
    tests = [*_coding_test(ctx, concept.codings), f"{local}{fhirpath_string(key)})"]
    return _matches(tests)


def _fits(element: str, mine: Sequence[str], known: Sequence[str]) -> str | None:
    """FHIRPath: a coding at ``element`` is one of ``mine``, and every coding there that is
    ``known`` (any coding of the group) is one of ``mine`` (Terminology.word: all codings
    must agree on the word)."""
    if not mine:
        return None
    own, every = " or ".join(mine), " or ".join(known)
    return (
        f"{element}.coding.where({own}).exists() and "
        f"{element}.coding.where(({every}) and ({own}).not()).empty()"
    )


def _word(ctx: MappingContext, value_set: str, element: str, *, open_text: bool = False) -> str:
    """The word of ``value_set`` that the CodeableConcept(s) at ``element`` stand for, as a
    chain of ``iif``: the first word all of whose known codings there agree on it, words
    with fewer codings first (Terminology.word takes the word missing the fewest of its
    codings); with ``open_text`` a CodeableConcept with no coding gives its text."""
    expr = f"{element}.where(coding.empty()).text.first()" if open_text else "{}"
    words = ctx.terminology.data.concepts.get(value_set, {})
    tests = {word: _coding_test(ctx, concept.codings) for word, concept in words.items()}
    known = [t for found in tests.values() for t in found]
    ordered = sorted(words, key=lambda w: len(tests[w]))
    for word in reversed(ordered):
        test = _fits(element, tests[word], known)
        if test is not None:
            expr = f"iif({test}, {fhirpath_string(word)}, {expr})"
    return expr


# -- columns ----------------------------------------------------------------------------------


def _own(ctx: MappingContext, name: str, kind: str) -> str:
    return f"extension({fhirpath_string(ctx.ext(name))}).value.ofType({kind})"


def _attribute_path(ctx: MappingContext, key: str, attr: AttributeDef) -> str | None:
    """Where an event attribute is, for the places FHIRPath reaches without a reference."""
    if attr.fhir == "extension":
        holder = f"extension({fhirpath_string(attribute_url(ctx, key, attr))}).value"
    elif attr.fhir == "method":
        holder = "method"
    elif attr.fhir == "used_code":
        holder = "usedCode"
    elif attr.fhir == "component":
        test = _matches(_coding_test(ctx, attr.codings))
        holder = f"component.where(code.{test}).value"
    else:
        return None  # specimen (through a reference), interpretation: NOT_EXPRESSED
    return _typed(ctx, holder, attr, plain=attr.fhir in ("method", "used_code"))


def _typed(ctx: MappingContext, holder: str, attr: AttributeDef, *, plain: bool) -> str:
    if attr.type == "coded":
        element = holder if plain else f"{holder}.ofType(CodeableConcept)"
        return _word(ctx, str(attr.value_set), element, open_text=attr.open)
    fhir_type = {"integer": "integer", "number": "decimal", "text": "string",
                 "boolean": "boolean", "date": "date"}.get(attr.type)  # fmt: skip
    if fhir_type is None:  # quantity: the number as written (NOT_EXPRESSED: no conversion)
        return f"{holder}.ofType(Quantity).value"
    if attr.type == "number":
        return _first([f"{holder}.ofType(decimal)", f"{holder}.ofType(integer)"])
    return f"{holder}.ofType({fhir_type})"


def _attribute_columns(ctx: MappingContext, shape: Shape | None) -> list[Json]:
    out = []
    for key, attr in sorted(ctx.concepts.data.attributes.items()):
        if attr.fhir == "method" and (shape is None or shape.resource != "Observation"):
            continue
        if attr.fhir == "component" and (shape is None or shape.resource != "Observation"):
            continue
        if attr.fhir == "used_code" and (shape is None or shape.resource != "Procedure"):
            continue
        path = _attribute_path(ctx, key, attr)
        if path is not None:
            out.append(_column(key, path))
    return out


def _time_columns(ctx: MappingContext, name: str, paths: Sequence[str]) -> list[Json]:
    if not paths:
        return []
    day = f".extension({fhirpath_string(ctx.ext('relative-day'))})"
    return [
        _column(f"{name}_date", _first(paths)),
        _column(f"{name}_day", _first(paths, f"{day}.extension('day').value.ofType(integer)")),
        _column(f"{name}_earliest_day",
                _first(paths, f"{day}.extension('earliest-day').value.ofType(integer)")),
        _column(f"{name}_latest_day",
                _first(paths, f"{day}.extension('latest-day').value.ofType(integer)")),
    ]  # fmt: skip


def _value_columns(shape: Shape) -> list[Json]:
    if shape.value == "dose":
        dose = _first(["dosage.dose", "dosage.rate.ofType(Quantity)"])
        return [
            _column("value_number", f"({dose}).value"),
            _column("value_unit", f"iif(({dose}).code.exists(), ({dose}).code, ({dose}).unit)"),
        ]
    if shape.value != "result":
        return []
    quantity = "value.ofType(Quantity)"
    return [
        _column("value_number", _first([f"{quantity}.value", "value.ofType(integer)"])),
        _column("value_unit", f"iif({quantity}.code.exists(), {quantity}.code, {quantity}.unit)"),
        _column("value_comparator", f"{quantity}.comparator"),
        _column("value_low", "value.ofType(Range).low.value"),
        _column("value_high", "value.ofType(Range).high.value"),
        _column("value_boolean", "value.ofType(boolean)"),
        _column("value_text", "value.ofType(string)"),
    ]  # fmt: skip


def _text_columns(ctx: MappingContext) -> list[Json]:
    return [
        _column("source_text", _own(ctx, "source-text", "string")),
        _column("origin", _own(ctx, "origin", "string")),
        _column("assumed", _own(ctx, "assumed", "string")),
    ]


def _identifier(centres: Sequence[Centre], id_kind: str, fallback: str) -> str:
    """The identifier value under a known centre's system, else ``fallback``."""
    systems = " or ".join(f"system = {fhirpath_string(c.system(id_kind))}" for c in centres)
    found = f"identifier.where({systems})"
    return f"iif({found}.exists(), {found}.value.first(), {fallback})"


# -- where: statuses ----------------------------------------------------------------------------


def _status_filters(table: StatusTable, resource: str) -> list[Json]:
    """A resource whose status is excluded, or no code of its value set, is no event."""
    out = []
    for name, element in table.elements.get(resource, {}).items():
        allowed = [c for c, rule in element.codes.items() if rule in ("keep", "flag")]
        if element.coded:
            coding = f"{name}.coding.where(system = {fhirpath_string(str(element.system))})"
            code, absent = f"{coding}.code.first()", f"{coding}.empty()"
        else:
            code, absent = name, f"{name}.empty()"
        tests = " or ".join(f"{code} = {fhirpath_string(c)}" for c in allowed)
        out.append({"path": f"{absent} or {tests}" if tests else absent})
    return out


# -- the views ------------------------------------------------------------------------------


def _view(name: str, resource: str, title: str, select: list[Json]) -> Json:
    return {
        "resourceType": VIEW_TYPE,
        "url": f"https://fhir-cart.dev/fhir/ViewDefinition/{name}",
        "name": name,
        "title": title,
        "status": "draft",
        "fhirVersion": ["4.0.1"],
        "resource": resource,
        "select": select,
    }


def patients_view(ctx: MappingContext, centres: Sequence[Centre], default_centre: str) -> Json:
    expr = fhirpath_string(default_centre)
    for centre in reversed(centres):
        system = fhirpath_string(centre.system("patient"))
        name = fhirpath_string(centre.name)
        expr = f"iif(identifier.where(system = {system}).exists(), {name}, {expr})"
    columns = [
        _column("patient_key", "getResourceKey()"),
        _column("study_id", _identifier(centres, "patient", "id")),
        _column("centre", expr),
        _column("sex", "gender"),
        _column("birth_date", "birthDate"),
    ]
    for key, attr in ctx.concepts.data.patient_attributes.items():
        url = fhirpath_string(attribute_url(ctx, key, attr))
        columns.append(_column(key, _typed(ctx, f"extension({url}).value", attr, plain=False)))
    return _view("patients", "Patient", "fhir_cart patients table", [{"column": columns}])


def _concept_branches(ctx: MappingContext, shape: Shape) -> list[Json]:
    """One unionAll branch per concept of the kind (per word of its value set for a
    condition read by its diagnosis): the resource itself where its code matches."""
    branches = []
    for key in ctx.concepts.keys(shape.kind):
        concept = ctx.concepts.concept(key)
        value_set = concept.value.value_set
        matches: list[tuple[str, str]] = []
        if concept.codings or shape.kind != "condition":
            test = _concept_match(ctx, key, concept)
            code = "{}"
            if value_set and shape.value == "result":
                code = _word(ctx, value_set, "value.ofType(CodeableConcept)",
                             open_text=concept.value.open)  # fmt: skip
            matches.append((f"{shape.code}.{test}", code))
        elif value_set:  # a diagnosis: each word of its value set is the concept's value
            for word, coded in ctx.terminology.data.concepts.get(value_set, {}).items():
                test = _matches(_coding_test(ctx, coded.codings))
                if test is not None:
                    matches.append((f"{shape.code}.{test}", fhirpath_string(word)))
        for where, code in matches:
            branches.append({
                "forEach": f"where({where})",
                "column": [_column("concept", fhirpath_string(key)), _column("value_code", code)],
            })  # fmt: skip
    return branches


def event_view(ctx: MappingContext, shape: Shape, centres: Sequence[Centre]) -> Json:
    id_kind = ID_KINDS[shape.resource]
    fallback = f"{fhirpath_string(id_kind + '-')} + id"
    columns = [
        _column("patient_key", "subject.getReferenceKey(Patient)"),
        _column("event_id", _identifier(centres, id_kind, fallback)),
        *_time_columns(ctx, "when", shape.when),
        *_time_columns(ctx, "end", shape.end),
        *_value_columns(shape),
        *_text_columns(ctx),
        *_attribute_columns(ctx, shape),
    ]
    select = [{"column": columns}, {"unionAll": _concept_branches(ctx, shape)}]
    title = f"fhir_cart events table: {shape.kind} events ({shape.resource})"
    view = _view(f"events_{shape.kind}", shape.resource, title, select)
    where = _status_filters(statuses_in(ctx.memo), shape.resource)
    if where:
        view["where"] = where
    return view


def _patient_event_view(ctx: MappingContext, kind: str, key: str) -> Json:
    """Death (``deceased[x]``) or follow-up (the extension named after the concept)."""
    day = fhirpath_string(ctx.ext("relative-day"))
    columns = [_column("patient_key", "getResourceKey()"), _column("concept", fhirpath_string(key))]
    if kind == "death":
        when = "deceased.ofType(dateTime)"
        columns += [
            _column("when_date", when),
            _column("when_day", f"{when}.extension({day}).extension('day').value.ofType(integer)"),
        ]
        select: list[Json] = [{"column": columns}]
        where = "deceased.ofType(dateTime).exists() or deceased.ofType(boolean) = true"
    else:
        url = fhirpath_string(ctx.ext(key.replace("_", "-")))
        inner = [
            _column("when_date", "extension('date').value.ofType(date)"),
            _column("when_day", "extension('day').value.ofType(integer)"),
        ]
        select = [{"column": columns}, {"forEach": f"extension({url})", "column": inner}]
        where = f"extension({url}).exists()"
    view = _view(f"events_{kind}", "Patient", f"fhir_cart events table: {kind} events (Patient)",
                 select)  # fmt: skip
    view["where"] = [{"path": where}]
    return view


def view_definitions(
    ctx: MappingContext, centres: Sequence[Centre], *, default_centre: str = "ehr"
) -> dict[str, Json]:
    """Every view, by name: ``patients`` and one ``events_<kind>`` per kind with concepts."""
    views = {"patients": patients_view(ctx, centres, default_centre)}
    for shape in SHAPES:
        if ctx.concepts.keys(shape.kind):
            views[f"events_{shape.kind}"] = event_view(ctx, shape, centres)
    for kind in ("death", "follow_up"):
        keys = ctx.concepts.keys(kind)
        if keys:
            views[f"events_{kind}"] = _patient_event_view(ctx, kind, keys[0])
    return views


def centres_in(ctx: MappingContext, folder: Path) -> list[Centre]:
    """Every centre of the centre mappings in ``folder``, under every identifier base any
    of them uses (and the default one): the systems a pull recognises for these centres."""
    from fhir_cart.conformance.artefacts import load_centres

    mappings = load_centres(folder).values()
    bases = sorted(
        {ctx.identifier_base, *(m.identifier_base or ctx.identifier_base for m in mappings)}
    )
    names = sorted({m.centre for m in mappings})
    return [Centre(name, base) for name in names for base in bases]


def write_views(views: Mapping[str, Json], out: Path) -> list[Path]:
    """One ``<name>.json`` per view in ``out`` (created), pretty-printed, keys in order."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, view in views.items():
        path = out / f"{name}.json"
        path.write_text(json.dumps(view, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written
