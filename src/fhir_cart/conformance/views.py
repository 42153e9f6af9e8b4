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
gives the rows of those columns only approximately or not at all. The FHIRPath used is what
Pathling (Spark) implements: the SQL-on-FHIR v2 set (``where``, ``exists``, ``empty``,
``first``, ``not``, ``ofType``, ``extension``, ``getResourceKey``, ``getReferenceKey``), ``and``,
``or``, ``=`` and the union ``|`` (of the elements of one choice type, or a Quantity's
``code | unit``); no ``iif``, ``startsWith`` or string ``+``, which Pathling lacks: a
choice among values is a ``unionAll`` of branches whose ``where`` conditions exclude each
other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fhir_cart.library.concepts import AttributeDef, ConceptDef
from fhir_cart.library.statuses import StatusTable
from fhir_cart.library.terminology import Coding
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.kinds import RESOURCE_KINDS
from fhir_cart.mappers.to_fhir import ID_KINDS, attribute_url
from fhir_cart.types import Json

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
    "string slicing in FHIRPath's SQL-on-FHIR set), or the resource id where the table has "
    "'<kind>-<resource id>'; fhir_cart shortens an id over 64 characters to its first 55, "
    "'-' and 8 hex digits of its SHA-256",
    "events.concept": "by exact codings of the library, not its prefix codings (ICD-10 C91.0 "
    "for its children: no startsWith in Pathling); fhir_cart also "
    "reads text-only codes (classify_by_text), refuses a resource whose codings fit two "
    "concepts (the view gives both rows), and reads drugs given by medicationReference",
    "events.when_date": "the dateTime as written; the table holds its day (the first 10 "
    "characters)",
    "events.when_anchor": "the anchor is a concept classified by its codings: not given",
    "events.value_code": "by exact codings, not prefix codings; not the rules for broader "
    "words and codings that fit several words; an Observation's coded result given in "
    "interpretation is not read",
    "events.status": "excluded statuses are filtered out (where); the flags are not given",
    "events.attributes": "only the attributes the kind's concepts declare (each coded one "
    "is a unionAll: the engines' cost grows with their number)",
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


SHAPES: tuple[Shape, ...] = tuple(
    Shape(k.type, k.concept_kind, k.code, k.when, k.end, k.view_value)
    for k in RESOURCE_KINDS
    if k.concept_kind is not None
)
"""The event kinds read from their own resource type (death and follow-up are Patient's)."""


def fhirpath_string(text: str) -> str:
    """A FHIRPath string literal (FHIRPath 1.0 §Literals: ``\\`` and ``'`` escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _column(name: str, path: str, kind: str | None = None) -> Json:
    column: Json = {"name": name, "path": path}
    if kind is not None:
        column["type"] = kind
    return column


# -- codings ----------------------------------------------------------------------------------


def _coding_test(ctx: MappingContext, codings: Iterable[Coding]) -> list[str]:
    """One test per exact coding; prefix codings (ICD-10 ``C91.0`` for its children) need
    ``startsWith``, which Pathling lacks: left out (NOT_EXPRESSED). A ``broader`` coding
    never says the word by itself (Terminology.word ignores it): not a test either."""
    out = []
    for coding in codings:
        if not (coding.prefix or coding.broader):
            system = fhirpath_string(ctx.terminology.system(coding.system))
            out.append(f"(system = {system} and code = {fhirpath_string(coding.code)})")
    return out


def _matches(tests: Sequence[str]) -> str | None:
    """``coding.where(...).exists()`` over the tests (None: nothing to match)."""
    return f"coding.where({' or '.join(tests)}).exists()" if tests else None


def _concept_match(ctx: MappingContext, key: str, concept: ConceptDef) -> str | None:
    local = f"(system = {fhirpath_string(ctx.concepts.local_system)} and code = "
    tests = [*_coding_test(ctx, concept.codings), f"{local}{fhirpath_string(key)})"]
    return _matches(tests)


def _fits(element: str, mine: Sequence[str], known: Sequence[str]) -> str:
    """FHIRPath: a coding at ``element`` is one of ``mine``, and every coding there that is
    ``known`` (any coding of the group) is one of ``mine`` (Terminology.word: all codings
    must agree on the word)."""
    own, every = " or ".join(mine), " or ".join(known)
    return (
        f"{element}.coding.where({own}).exists() and "
        f"{element}.coding.where(({every}) and ({own}).not()).empty()"
    )


def _word_tests(
    ctx: MappingContext, value_set: str, element: str, *, open_text: bool = False
) -> tuple[list[tuple[str, str]], str]:
    """(condition, word literal) per word of ``value_set``, at most one of them true for a
    resource, and the condition that none is. A word fits when all known codings at
    ``element`` agree on it; of two that fit, the one with fewer codings wins (it misses
    fewer: Terminology.word). With ``open_text`` a CodeableConcept with no coding gives its
    text. Written as conditions, not ``iif`` (which Pathling lacks)."""
    words = ctx.terminology.data.concepts.get(value_set, {})
    tests = {w: _coding_test(ctx, c.codings) for w, c in words.items()}
    known = [t for found in tests.values() for t in found]
    ordered = sorted((w for w in words if tests[w]), key=lambda w: len(tests[w]))
    fits = {w: _fits(element, tests[w], known) for w in ordered}
    out = []
    for i, word in enumerate(ordered):
        before = [fits[v] for v in ordered[:i] if set(tests[v]) & set(tests[word])]
        cond = f"({fits[word]}) and ({' or '.join(before)}).not()" if before else fits[word]
        out.append((cond, fhirpath_string(word)))
    every = list(fits.values())
    if open_text:
        text = f"{element}.where(coding.empty()).text"
        out.append((f"{text}.exists()", f"{text}.first()"))
        every.append(f"{text}.exists()")
    none = f"({' or '.join(every)}).not()" if every else "true"
    return out, none


def _one_of(branches: Sequence[tuple[str, list[Json]]]) -> Json:
    """A select of exactly one row per resource: the branch whose condition holds (the
    conditions exclude each other and cover every case)."""
    return {"unionAll": [{"forEach": f"where({cond})", "column": cols} for cond, cols in branches]}


def _word_select(
    ctx: MappingContext, value_set: str, element: str, name: str, *, open_text: bool = False
) -> Json:
    """The column ``name``: the word of ``value_set`` at ``element`` (or empty)."""
    tests, none = _word_tests(ctx, value_set, element, open_text=open_text)
    branches = [(cond, [_column(name, word)]) for cond, word in tests]
    return _one_of([*branches, (none, [_column(name, "{}")])])


# -- columns ----------------------------------------------------------------------------------


def _own(ctx: MappingContext, name: str, kind: str) -> str:
    return f"extension({fhirpath_string(ctx.ext(name))}).value.ofType({kind})"


def _holder(ctx: MappingContext, key: str, attr: AttributeDef) -> str | None:
    """Where an event attribute is, for the places FHIRPath reaches without a reference."""
    if attr.fhir == "extension":
        url = fhirpath_string(attribute_url(ctx, key, attr))
        return f"extension({url}).value" + (
            ".ofType(CodeableConcept)" if attr.type == "coded" else ""
        )
    if attr.fhir == "method":
        return "method"
    if attr.fhir == "used_code":
        return "usedCode"
    if attr.fhir == "component":
        test = _matches(_coding_test(ctx, attr.codings))
        value = ".ofType(CodeableConcept)" if attr.type == "coded" else ""
        return f"component.where(code.{test}).value{value}"
    return None  # specimen (through a reference), interpretation: NOT_EXPRESSED


def _scalar(holder: str, attr: AttributeDef) -> str:
    if attr.type == "number":
        return f"({holder}.ofType(decimal) | {holder}.ofType(integer)).first()"
    if attr.type == "quantity":  # the number as written (NOT_EXPRESSED: no conversion)
        return f"{holder}.ofType(Quantity).value"
    fhir_type = {"integer": "integer", "text": "string", "boolean": "boolean", "date": "date"}
    return f"{holder}.ofType({fhir_type[attr.type]})"


_ONLY_ON = {place: k.type for k in RESOURCE_KINDS for place in k.only_places}


def _attributes(
    ctx: MappingContext, attrs: Mapping[str, AttributeDef], resource: str
) -> tuple[list[Json], list[Json]]:
    """Columns of the plain attributes, and a select per coded one."""
    columns, selects = [], []
    for key, attr in sorted(attrs.items()):
        if _ONLY_ON.get(attr.fhir, resource) != resource:
            continue
        holder = _holder(ctx, key, attr)
        if holder is None:
            continue
        if attr.type == "coded":
            selects.append(_word_select(ctx, str(attr.value_set), holder, key, open_text=attr.open))
        else:
            columns.append(_column(key, _scalar(holder, attr)))
    return columns, selects


def _either(paths: Sequence[str], suffix: str = "") -> str:
    """The first of ``paths`` (elements of one choice type: at most one is there)."""
    if len(paths) == 1:
        return paths[0] + suffix
    return "(" + " | ".join(p + suffix for p in paths) + ").first()"


def _time_columns(ctx: MappingContext, name: str, paths: Sequence[str]) -> list[Json]:
    if not paths:
        return []
    day = f".extension({fhirpath_string(ctx.ext('relative-day'))})"
    return [_column(f"{name}_date", _either(paths))] + [
        _column(
            f"{name}_{part.replace('-', '_')}",
            _either(paths, f"{day}.extension('{part}').value.ofType(integer)"),
        )
        for part in ("day", "earliest-day", "latest-day")
    ]


def _value_columns(shape: Shape) -> list[Json]:
    if shape.value == "dose":  # the dose, else the rate (from_fhir: dose or rateQuantity)
        dose = "(dosage.dose | dosage.rate.ofType(Quantity)).first()"
        return [
            _column("value_number", f"{dose}.value"),
            _column("value_unit", f"({dose}.code | {dose}.unit).first()"),
        ]
    if shape.value != "result":
        return []
    quantity = "value.ofType(Quantity)"
    return [
        _column("value_number", f"({quantity}.value | value.ofType(integer)).first()"),
        _column("value_unit", f"({quantity}.code | {quantity}.unit).first()"),
        _column("value_comparator", f"{quantity}.comparator"),
        _column("value_low", "value.ofType(Range).low.value"),
        _column("value_high", "value.ofType(Range).high.value"),
        _column("value_boolean", "value.ofType(boolean)"),
        _column("value_text", "value.ofType(string)"),
    ]


def _text_columns(ctx: MappingContext) -> list[Json]:
    return [
        _column("source_text", _own(ctx, "source-text", "string")),
        _column("origin", _own(ctx, "origin", "string")),
        _column("assumed", _own(ctx, "assumed", "string")),
    ]


def _systems(centres: Sequence[Centre], id_kind: str) -> str:
    return " or ".join(f"system = {fhirpath_string(c.system(id_kind))}" for c in centres)


def _event_id(centres: Sequence[Centre], id_kind: str) -> Json:
    """The identifier value under a known centre's system, else the resource id (the
    table's ``<kind>-<id>``: FHIRPath in Pathling has no string ``+``)."""
    if not centres:
        return {"column": [_column("event_id", "id")]}
    found = f"identifier.where({_systems(centres, id_kind)})"
    return _one_of(
        [
            (f"{found}.exists()", [_column("event_id", f"{found}.value.first()")]),
            (f"{found}.empty()", [_column("event_id", "id")]),
        ]
    )


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
    names = sorted({c.name for c in centres})
    branches = []
    for name in names:
        found = f"identifier.where({_systems([c for c in centres if c.name == name], 'patient')})"
        cols = [
            _column("study_id", f"{found}.value.first()"),
            _column("centre", fhirpath_string(name)),
        ]
        branches.append((f"{found}.exists()", cols))
    known = f"identifier.where({_systems(centres, 'patient')}).empty()" if centres else "true"
    default = [_column("study_id", "id"), _column("centre", fhirpath_string(default_centre))]
    columns = [
        _column("patient_key", "getResourceKey()"),
        _column("sex", "gender"),
        _column("birth_date", "birthDate"),
    ]
    plain, coded = _attributes(ctx, ctx.concepts.data.patient_attributes, "Patient")
    select = [{"column": columns + plain}, _one_of([*branches, (known, default)]), *coded]
    return _view("patients", "Patient", "fhir_cart patients table", select)


def _concept_branch(ctx: MappingContext, shape: Shape, key: str) -> Json:
    """The resource itself where its code is the concept ``key``, with its coded value."""
    concept = ctx.concepts.concept(key)
    test = _concept_match(ctx, key, concept)
    branch: Json = {"forEach": f"where({shape.code}.{test})"}
    branch["column"] = [_column("concept", fhirpath_string(key))]
    value_set = concept.value.value_set
    if value_set and shape.value == "result":
        element, open_text = "value.ofType(CodeableConcept)", concept.value.open
        branch["select"] = [
            _word_select(ctx, value_set, element, "value_code", open_text=open_text)
        ]
    else:
        branch["column"].append(_column("value_code", "{}"))
    return branch


def _concept_branches(ctx: MappingContext, shape: Shape) -> list[Json]:
    """One unionAll branch per concept of the kind (per word of its value set for a
    condition read by its diagnosis)."""
    branches: list[Json] = []
    for key in ctx.concepts.keys(shape.kind):
        concept = ctx.concepts.concept(key)
        if concept.codings or shape.kind != "condition":
            branches.append(_concept_branch(ctx, shape, key))
        elif concept.value.value_set:  # a diagnosis: each word of its value set is its value
            name = _column("concept", fhirpath_string(key))
            tests, _ = _word_tests(ctx, concept.value.value_set, shape.code)
            branches += [
                {"forEach": f"where({cond})", "column": [name, _column("value_code", word)]}
                for cond, word in tests
            ]
    return branches


def event_view(ctx: MappingContext, shape: Shape, centres: Sequence[Centre]) -> Json:
    columns = [
        _column("patient_key", "subject.getReferenceKey(Patient)"),
        *_time_columns(ctx, "when", shape.when),
        *_time_columns(ctx, "end", shape.end),
        *_value_columns(shape),
        *_text_columns(ctx),
    ]
    declared = {
        a for key in ctx.concepts.keys(shape.kind) for a in ctx.concepts.concept(key).attributes
    }
    attrs = {k: a for k, a in ctx.concepts.data.attributes.items() if k in declared}
    plain, coded = _attributes(ctx, attrs, shape.resource)
    select = [
        {"column": columns + plain},
        _event_id(centres, ID_KINDS[shape.resource]),
        {"unionAll": _concept_branches(ctx, shape)},
        *coded,
    ]
    title = f"fhir_cart events table: {shape.kind} events ({shape.resource})"
    view = _view(f"events_{shape.kind}", shape.resource, title, select)
    where = _status_filters(ctx.statuses, shape.resource)
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
    title = f"fhir_cart events table: {kind} events (Patient)"
    view = _view(f"events_{kind}", "Patient", title, select)
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
