"""``registry build``: every centre's file to one pseudonymised, linked, merged registry.

centre files --mappings--> records per centre --keyed pseudonyms--> linkage (identifiers,
then splink) --source-of-truth rules--> one record per patient + conflicts --> protected
(identifiers and free text dropped, dates relative or shifted) --> tables, reports,
summaries, FHIR artefacts.

Repeatable: rows, files and JSON keys are sorted, and nothing reads the clock, so the same
inputs give the same bytes. A rebuild whose inputs (files, mappings, registry file, key,
fhir_cart version) are unchanged writes nothing (``state.json`` holds their hashes; never the
key). With a work folder, a centre whose inputs did not change is not read again, and only
links that touch a changed centre are computed again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fhir_cart import __version__
from fhir_cart.collector import bulk_collection
from fhir_cart.errors import ConfigError
from fhir_cart.library import Library
from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.records import Case
from fhir_cart.registry import fhir, tables
from fhir_cart.registry.compact import FieldSets, Tokens
from fhir_cart.registry.decisions import Decision, read_decisions
from fhir_cart.registry.definition import CentreDef, RegistryDef
from fhir_cart.registry.extract import (
    Sealed,
    read_extract,
    seal,
    unseal,
)
from fhir_cart.registry.ids import IdLedger, assign_ids
from fhir_cart.registry.linkage import (
    Link,
    Linkage,
    LinkRecord,
    cluster,
    deterministic_links,
    linkage_record,
)
from fhir_cart.registry.merge import MergedPatient, registry_event_id, registry_event_namer
from fhir_cart.registry.output import IDS_FILE, json_bytes, read_ids, write_registry
from fhir_cart.registry.protect import Protection
from fhir_cart.registry.pseudonyms import Pseudonymiser
from fhir_cart.registry.publish import Published, Sources, publish
from fhir_cart.registry.quality import centre_quality
from fhir_cart.registry.review import ReviewItem, Settled, rivalled, settle
from fhir_cart.registry.sources import centre_sources, input_hashes, sha256_of
from fhir_cart.registry.work import CentreData, LinkState, WorkFolder

__all__ = [
    "BuildResult",
    "CentreData",
    "Registry",
    "build_registry",
    "read_centre",
]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""(step, done, total)."""
Summariser = Callable[[Sequence[Case]], list[dict[str, Any]]]
"""Cases -> measures ({id, label, value}) of the registry's study definition."""


CentreReader = Callable[[CentreDef, RegistryDef], CentreData]


def read_centre(
    centre: CentreDef, definition: RegistryDef, library: Library | None = None
) -> CentreData:
    """The centre's file read with its mapping (the open model's reader, spec §2), against
    ``library`` (default: the shipped one)."""
    from fhir_cart.library.study_mapping import load_study_mapping
    from fhir_cart.study import read_study

    if centre.data is None or centre.mapping is None:
        raise ConfigError(f"centre {centre.id}: the registry file names no data and mapping")
    library = library or Library.default()
    mapping = load_study_mapping(definition.resolve(centre.mapping), library)
    if mapping.centre != centre.id:
        raise ConfigError(
            f"centre {centre.id}: its mapping file {centre.mapping} says centre {mapping.centre}"
        )
    result = read_study(
        definition.resolve(centre.data), mapping, library.for_mapping(mapping), keep_sources=True
    )
    unmapped = [_column_name(u) for u in result.unmapped_columns]
    return CentreData(list(result.cases), list(result.rejects), unmapped, dict(result.sources))


def _column_name(where: Any) -> str:
    parts = [getattr(where, name, None) for name in ("file", "sheet", "column")]
    if any(parts):
        return " / ".join(str(p) for p in parts if p)
    return str(where)


@dataclass
class Registry:
    """The outcome in memory (tests and the push use it)."""

    cases: list[Case]
    """Protected registry patients (pseudonyms, no identifiers, protected dates); empty when
    the build was asked not to keep them (``keep=False``: the files have them)."""
    merged: list[MergedPatient]
    conflicts: list[dict[str, Any]]
    links: list[Link]
    refused: list[Link]
    quality: dict[str, Any]
    summaries: dict[str, Any]
    concept_maps: list[dict[str, Any]]
    provenance: list[dict[str, Any]]
    centre_records: dict[str, int]
    link_state: LinkState | None = None
    ids: IdLedger | None = None
    """Registry id -> its centre records, and every id retired (see :mod:`.ids`)."""
    review: list[ReviewItem] = field(default_factory=list)
    """Pairs for people to decide (``reports/review.csv``)."""
    blocked: list[Link] = field(default_factory=list)
    """Links not taken because people decided the records apart."""
    notes: list[str] = field(default_factory=list)
    published: Published | None = None
    """What the files need (tables, Provenance bytes, counts), gathered patient by patient."""

    @property
    def patient_count(self) -> int:
        return len(self.cases) if self.published is None else self.published.count

    @property
    def shared_count(self) -> int:
        """Patients with records at more than one centre."""
        if self.published is None:
            return sum(1 for m in self.merged if len(m.centres) > 1)
        return self.published.shared


@dataclass
class BuildResult:
    out: Path
    skipped: bool
    """Nothing changed since the last build: nothing was written."""
    registry: Registry | None = None
    files: list[Path] = field(default_factory=list)
    centres_read: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What the work folder could not give (read again instead), for the user to see."""


# -- inputs ----------------------------------------------------------------------------


def sealed_centre(
    centre: str,
    data: CentreData,
    definition: RegistryDef,
    pseudonyms: Pseudonymiser,
    library: ConceptLibrary | None,
) -> CentreData:
    """A centre's records as its extract would give them (sealed, dates moved back in
    memory): the build works on this form only, so a file and an extract build alike."""
    sealed = seal(
        centre,
        data.cases,
        data.rejects,
        [str(c) for c in data.unmapped_columns],
        data.sources,
        definition,
        pseudonyms,
        library,
        moved=False,
    )
    return _opened(sealed)


def _opened(sealed: Sealed) -> CentreData:
    return CentreData(
        sealed.cases,
        sealed.rejects,
        list(sealed.unmapped_columns),
        sealed.sources,
        sealed.keys,
    )


def _sealing_fingerprint(definition: RegistryDef, pseudonyms: Pseudonymiser) -> str:
    """What a centre's sealed records depend on besides its files: the key, what linkage
    compares and what is dropped (the work folder's records are sealed under them)."""
    text = definition.linkage.model_dump_json() + definition.pseudonymisation.model_dump_json()
    text += _SEALED_KEYS  # what a sealed record's keys hold (older work folders: read again)
    return hashlib.sha256((text + pseudonyms.fingerprint()).encode()).hexdigest()


_SEALED_KEYS = "names: spelling, sound, bloom, first word, last word"


def _linkage_fingerprint(definition: RegistryDef, pseudonyms: Pseudonymiser) -> str:
    text = definition.linkage.model_dump_json() + pseudonyms.fingerprint() + __version__
    return hashlib.sha256(text.encode()).hexdigest()


def _state(
    definition: RegistryDef, sources: dict[str, fhir.SourceInfo], key: Pseudonymiser
) -> dict[str, Any]:
    decisions = definition.resolve(definition.linkage.decisions)
    extracts = {
        c.id: sha256_of(definition.resolve(c.extract))
        for c in definition.centres
        if c.extract is not None
    }
    return {
        **({"extracts": extracts} if extracts else {}),  # a new extract of the same file
        "fhir_cart": __version__,
        "definition": definition.fingerprint(),
        "decisions": sha256_of(decisions) if decisions.is_file() else None,
        "key": key.fingerprint(),
        "centres": {
            c: {"data": s.file_sha256, "mapping": s.mapping_sha256}
            for c, s in sorted(sources.items())
        },
    }


# -- the pipeline ----------------------------------------------------------------------


def _probabilistic(
    records: list[LinkRecord],
    definition: RegistryDef,
    state: LinkState,
    previous: LinkState | None,
    spark: Any,
    spill: Path | None = None,
) -> LinkState:
    """Score the pairs that touch a centre whose inputs changed; reuse the others."""
    from fhir_cart.registry import _splink

    if not definition.linkage.probabilistic or len({r.centre for r in records}) < 2:
        return state
    reuse = previous is not None and previous.linkage == state.linkage and previous.model
    if not reuse or previous is None:
        links, model = _splink.predict(records, definition.linkage, spark=spark, spill=spill)
        return LinkState(state.linkage, state.centres, links, model, sorted(state.centres))
    same = {c for c, h in state.centres.items() if previous.centres.get(c) == h}
    centre_of = {r.pseudonym: r.centre for r in records}
    kept = [
        k
        for k in previous.links
        if centre_of.get(k.left) in same and centre_of.get(k.right) in same
    ]
    changed = set(state.centres) - same
    new: list[Link] = []
    if changed:
        new, _ = _splink.predict(
            records,
            definition.linkage,
            spark=spark,
            only=changed,
            model=previous.model,
            spill=spill,
        )
    return LinkState(
        state.linkage, state.centres, sorted(kept + new), previous.model, sorted(changed)
    )


def _link(
    data: dict[str, CentreData],
    definition: RegistryDef,
    pseudonyms: Pseudonymiser,
    spark: Any,
    progress: Progress,
    state: LinkState,
    previous: LinkState | None = None,
    ids: IdLedger | None = None,
    decisions: dict[tuple[str, str], Decision] | None = None,
    spill: Path | None = None,
) -> tuple[dict[str, list[Case]], Linkage, LinkState, IdLedger, Settled]:
    """Registry pseudonym -> that patient's centre records, the clusters, what a later run
    may reuse, the registry ids' ledger (``ids``: the last build's), and what people
    decided and are asked to decide."""
    records: list[LinkRecord] = []
    case_of: dict[str, Case] = {}
    for centre in sorted(data):
        keys = data[centre].keys
        for case in data[centre].cases:
            given = None if keys is None else keys[case.patient.study_id]
            keyed = None if given is None else (given.identifiers, given.names)
            record = linkage_record(case, definition.linkage, pseudonyms, keyed)
            records.append(record)
            case_of[record.pseudonym] = case
    progress("link", 0, 1)
    state = _probabilistic(records, definition, state, previous, spark, spill)
    identifier = deterministic_links(records)
    settled = settle(
        identifier,
        state.links,
        _contradicted(records, identifier, definition, state, spark, spill),
        decisions or {},
        set(case_of),
        definition.linkage.threshold,
    )
    found = cluster(records, settled.links, definition.linkage.threshold, settled.apart)
    progress("link", 1, 1)
    clusters = list(found.members().values())
    names, ledger = assign_ids(clusters, ids, pseudonyms)
    patients = {
        name: [case_of[m] for m in members] for name, members in zip(names, clusters, strict=True)
    }
    return dict(sorted(patients.items())), found, state, ledger, settled


def _contradicted(
    records: list[LinkRecord],
    identifier: list[Link],
    definition: RegistryDef,
    state: LinkState,
    spark: Any,
    spill: Path | None = None,
) -> dict[tuple[str, str], Link]:
    """Identifier pairs whose other fields, from even odds, give a probability below
    ``linkage.contradiction``, or whose one record is linked by probability to another
    record of the other's centre (:func:`~fhir_cart.registry.review.rivalled`), or whose
    given names differ outright (:func:`~fhir_cart.registry._splink.given_name_differs`):
    a twin's number typed into the co-twin's record."""
    from fhir_cart.registry import _splink

    linkage = definition.linkage
    if not identifier or state.model is None or linkage.contradiction <= 0:
        return {}
    pairs = [(k.left, k.right) for k in identifier]
    scored = _splink.identifier_evidence(
        records, pairs, linkage, state.model, spark=spark, spill=spill
    )
    centre_of = {r.pseudonym: r.centre for r in records}
    rivals = rivalled(identifier, state.links, centre_of, linkage.threshold)
    return {
        p: k
        for p, k in scored.items()
        if k.probability < linkage.contradiction
        or p in rivals
        or _splink.given_name_differs(k.evidence, linkage.names)
    }


def _publish(
    patients: dict[str, list[Case]],
    definition: RegistryDef,
    protection: Protection,
    progress: Progress,
    sources: Sources,
    keep: bool,
) -> Published:
    """Merged, protected and gathered patient by patient (:mod:`.publish`). Sealed records'
    event ids are already the keyed tokens (:func:`~fhir_cart.registry.extract.event_key`)."""
    sealed = bool(sources.data) and all(d.keys is not None for d in sources.data.values())
    namer = (
        (lambda centre, _, e: registry_event_id(centre, f"{e.concept}-{e.event_id}"))
        if sealed
        else registry_event_namer(protection.pseudonyms.token)
    )
    return publish(
        patients.items(), len(patients), definition, protection, namer, sources, progress, keep
    )


def _quality(
    data: dict[str, CentreData],
    library: ConceptLibrary | None,
    pseudonyms: Pseudonymiser,
    keep_text: Sequence[str],
) -> dict[str, Any]:
    return {
        centre: centre_quality(
            centre,
            data[centre].cases,
            library=library,
            pseudonyms=pseudonyms,
            unmapped_columns=data[centre].unmapped_columns,
            rejects=data[centre].rejects,
            keep_text=keep_text,
            sealed=data[centre].keys is not None,
        ).as_dict()
        for centre in sorted(data)
    }


def _gaps(quality: dict[str, Any], counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Each centre's quality with ``missing_where_a_linked_centre_has``: field -> how many
    of its linked patients lack it (or a detail of it) while another centre has it."""
    return {
        centre: {
            **report,
            "missing_where_a_linked_centre_has": dict(sorted(counts.get(centre, {}).items())),
        }
        for centre, report in quality.items()
    }


def _summaries(
    summariser: Summariser | None, merged: list[Case], data: dict[str, CentreData]
) -> dict[str, Any]:
    if summariser is None:
        return {}
    return {
        "pooled": summariser(merged),
        "centres": {c: summariser(data[c].cases) for c in sorted(data)},
    }


def _concept_maps(
    definition: RegistryDef, data: dict[str, CentreData], library: ConceptLibrary | None
) -> list[dict[str, Any]]:
    base = definition.fhir.identifier_base.rstrip("/")
    return [
        fhir.concept_map(definition.id, c, fhir.local_words(data[c].cases, library), base, library)
        for c in sorted(data)
    ]


def assemble(
    definition: RegistryDef,
    data: dict[str, CentreData],
    sources: dict[str, fhir.SourceInfo],
    *,
    pseudonyms: Pseudonymiser,
    library: ConceptLibrary | None = None,
    summariser: Summariser | None = None,
    spark: Any = None,
    progress: Progress | None = None,
    previous: LinkState | None = None,
    ids: IdLedger | None = None,
    decisions: dict[tuple[str, str], Decision] | None = None,
    keep: bool = True,
    spill: Path | None = None,
) -> Registry:
    """The registry in memory from each centre's records (pure but for splink's engine).
    ``previous``: the link state of an earlier run, whose scores of unchanged centres'
    pairs are reused; ``ids``: the ledger of the last build, whose ids are kept; ``keep``:
    the registry keeps its merged, protected and Provenance objects (``cases``, ``merged``,
    ``provenance``); without it only what the files need (``published``) and the counts;
    ``spill``: where DuckDB may spill linkage past its memory limit (the work folder)."""
    step = progress or (lambda *_: None)
    state = LinkState(_linkage_fingerprint(definition, pseudonyms), input_hashes(sources))
    patients, found, state, ledger, settled = _link(
        data, definition, pseudonyms, spark, step, state, previous, ids, decisions, spill
    )
    protection = Protection(definition, pseudonyms, library)
    where = Sources(data, sources, library, pseudonyms)
    # the objects are kept for a caller that asks and for the pooled summaries
    published = _publish(
        patients, definition, protection, step, where, keep or summariser is not None
    )
    del patients
    return Registry(
        cases=published.cases if keep else [],
        merged=published.merged if keep else [],
        conflicts=published.conflicts,
        links=found.links,
        refused=found.refused,
        quality=_gaps(
            _quality(data, library, pseudonyms, definition.pseudonymisation.keep_text),
            published.gaps,
        ),
        summaries=_summaries(summariser, [m.case for m in published.merged], data),
        concept_maps=_concept_maps(definition, data, library),
        provenance=published.provenance_resources if keep else [],
        centre_records={c: len(d.cases) for c, d in sorted(data.items())},
        link_state=state,
        ids=ledger,
        published=published,
        review=settled.review,
        blocked=found.blocked,
        notes=[
            f"decision on {d.left} and {d.right} ({'link' if d.link else 'no-link'}, by "
            f"{d.by}): not both records are in this build (removed, or another key); not used"
            for d in settled.unknown
        ],
    )


def build_registry(
    definition: RegistryDef,
    out: Path,
    *,
    key: bytes,
    reader: CentreReader = read_centre,
    library: ConceptLibrary | None = None,
    summariser: Summariser | None = None,
    spark: Any = None,
    progress: Progress | None = None,
    force: bool = False,
    work: Path | None = None,
    keep: bool = True,
) -> BuildResult:
    """Build (or bring up to date) the registry in ``out``. With a ``work`` folder, centres
    whose inputs did not change since the last build are not read again, and only the
    pairs that touch a changed centre are scored again. ``keep``: the result's registry
    holds every patient's objects (:func:`assemble`); a build that only writes its files
    passes False and holds none of them."""
    pseudonyms = Pseudonymiser(key)
    sources = centre_sources(definition)
    state = _state(definition, sources, pseudonyms)
    state_file = out / "state.json"
    if not force and state_file.exists() and orjson.loads(state_file.read_bytes()) == state:
        return BuildResult(out=out, skipped=True)
    step = progress or (lambda *_: None)
    folder = None if work is None else WorkFolder(work)
    ids, id_notes = read_ids(out)
    if ids is None and not id_notes and folder is not None:
        # a build into a new folder (the service's job folders): the work folder keeps the
        # last build's ledger, so ids last across them
        ids, id_notes = read_ids(folder.folder)
    decisions = read_decisions(definition.resolve(definition.linkage.decisions))
    inputs = input_hashes(sources)
    # the build makes millions of objects that live until written: automatic collections
    # would walk them all again and again (:mod:`fhir_cart.collector`); one per centre read
    with bulk_collection(every=1) as collector:
        data: dict[str, CentreData] = {}
        read: list[str] = []
        # the records live until written: in less memory (.compact)
        shared, tokens = FieldSets(), Tokens()
        for n, centre in enumerate(definition.centres, start=1):
            if centre.extract is not None:
                path = definition.resolve(centre.extract)
                data[centre.id] = _opened(
                    unseal(read_extract(path, centre.id, pseudonyms), pseudonyms)
                )
                shared.share(data[centre.id].cases)
                data[centre.id].keys = tokens.share(data[centre.id].keys)
                read.append(centre.id)
                step("read", n, len(definition.centres))
                continue
            sealing = f"{inputs[centre.id]}:{_sealing_fingerprint(definition, pseudonyms)}"
            cached = None if folder is None or force else folder.centre(centre.id, sealing)
            if cached is None:
                read_now = reader(centre, definition)
                read.append(centre.id)
                cached = sealed_centre(centre.id, read_now, definition, pseudonyms, library)
                if folder is not None:
                    folder.save_centre(centre.id, sealing, cached)
            shared.share(cached.cases)
            cached.keys = tokens.share(cached.keys)
            data[centre.id] = cached
            collector.step()  # what reading left: collected once per centre
            step("read", n, len(definition.centres))
        del shared, tokens  # their tables: the records hold what they share
        registry = assemble(
            definition,
            data,
            sources,
            pseudonyms=pseudonyms,
            library=library,
            summariser=summariser,
            spark=spark,
            progress=progress,
            previous=None if folder is None or force else folder.link_state(),
            ids=ids,
            decisions=decisions,
            keep=keep,
            spill=None if folder is None else folder.folder,
        )
        if folder is not None and registry.link_state is not None:
            folder.save_link_state(registry.link_state)
        files = write_registry(out, registry, definition, library)
        if folder is not None:
            folder.save_ids((out / IDS_FILE).read_bytes())
    tables._write_if_changed(state_file, json_bytes(state))
    notes = id_notes + registry.notes + ([] if folder is None else folder.notes)
    return BuildResult(out, False, registry, [*files, state_file], sorted(read), notes)
