"""Centre-side extracts: what a centre sends to the registry instead of its file.

``fhir-cart registry extract`` reads the centre's file with its mapping (as the build does)
and seals the records under the registry key (:func:`seal`); ``registry build`` opens an
extract (:func:`unseal`) and builds from it exactly as from the file: the build itself seals
every file it reads the same way first, so a centre sent as an extract and the same centre
read from its file give the same links and the same bytes.

What a sealed record holds (docs/registry.md, "Centre-side extracts"):

- the patient and every event under keyed names: the record pseudonym (``p...``, as the
  registry's links use it), keyed event ids, keyed row tokens (``s...``) for Provenance;
- linkage identifiers and names only as the keyed tokens the build compares (identifier
  pseudonyms; HMAC of the normalised name and of its Soundex code), the attribute itself
  replaced by a withheld token (so completeness still counts it);
- every date moved by one keyed offset common to all centres of the registry (days for a
  full date, whole years for a year or a month, so a partial date stays partial): intervals
  and the differences between centres survive, which linkage and the merge need. Whoever
  holds the registry key can move them back; the build does so in memory;
- open text that fails the screen (:mod:`.screen`), every value of a linkage identifier or
  name, and every rejected cell's value as a keyed token ``#<digits>`` (the same text gives
  the same token at every centre, so conflicts stay conflicts); a number's own source text
  (``1,2``, ``5 mg/kg``) stays, as it is the measurement;
- no file name, sheet or row: the rejects keep their table and column, the unmapped columns
  their header.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fhir_cart import __version__
from fhir_cart.errors import ConfigError, Reject
from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.records import Case, Event, Precision, Scalar, When
from fhir_cart.registry.definition import RegistryDef
from fhir_cart.registry.files import write_atomically
from fhir_cart.registry.pseudonyms import Pseudonymiser
from fhir_cart.registry.screen import screened

__all__ = [
    "EXTRACT_FORMAT",
    "EXTRACT_VERSION",
    "RecordKeys",
    "Sealed",
    "Shift",
    "event_key",
    "read_extract",
    "seal",
    "unseal",
    "write_extract",
]

EXTRACT_FORMAT = "fhir-cart-registry-extract"
EXTRACT_VERSION = 1
_NUMBER_TEXT = re.compile(r"^\s*[<>=≤≥]*\s*[-+]?\d[\d.,\s]*(?:[A-Za-zµ/%*^()\[\]0-9.\s-]*)$")
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class RecordKeys:
    """A sealed record's linkage keys in keyed form (what the build compares)."""

    identifiers: tuple[str, ...] = ()
    names: dict[str, tuple[str, ...] | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Shift:
    """The keyed offset every date of every centre moves by in an extract."""

    days: int
    years: int

    @classmethod
    def of(cls, pseudonyms: Pseudonymiser) -> Shift:
        return cls(pseudonyms.offset("extract-days", 3650), pseudonyms.offset("extract-years", 20))

    @property
    def none(self) -> bool:
        """No move at all (:func:`seal` with ``moved=False``: the dates stay in place)."""
        return self.days == 0 and self.years == 0

    def date(self, value: dt.date, precision: Precision, back: bool = False) -> dt.date:
        if self.none:
            return value
        sign = -1 if back else 1
        if precision == "day":
            return value + dt.timedelta(days=sign * self.days)
        return value.replace(year=value.year + sign * self.years)

    def when(self, when: When | None, back: bool = False) -> When | None:
        if when is None or when.date is None or self.none:
            return when
        return when.model_copy(update={"date": self.date(when.date, when.precision, back)})

    def iso(self, value: Scalar, back: bool = False) -> Scalar:
        moved = self.iso_date(value, back)
        return value if moved is None else moved

    def iso_date(self, value: Scalar, back: bool = False) -> str | None:
        """An ISO date moved (written as ISO), None when the value is no ISO date."""
        try:
            parsed = dt.date.fromisoformat(str(value))
        except ValueError:
            return None
        return self.date(parsed, "day", back).isoformat()


@dataclass
class Sealed:
    """One centre's records, sealed (see the module). The build works on this form only."""

    centre: str
    cases: list[Case]
    keys: dict[str, RecordKeys]
    """Record pseudonym -> its linkage keys."""
    rejects: list[Reject]
    unmapped_columns: list[str]
    sources: dict[str, dict[str, str]]
    """Record pseudonym -> {"" and keyed event id -> keyed row token}."""
    date_attributes: list[str] = field(default_factory=list)
    """Attributes holding dates (moved with the rest), as the sealing library knew them."""


def withheld(pseudonyms: Pseudonymiser, value: str) -> str:
    """A keyed token for a text that may not leave: digits only, so it never passes the
    screen and is never published."""
    return "#" + str(int(pseudonyms.token("extract-text", value)[:20], 16)).zfill(24)


def _text(pseudonyms: Pseudonymiser, value: str | None) -> str | None:
    if value is None or screened(value):
        return value
    return withheld(pseudonyms, value)


def _date_attributes(library: ConceptLibrary | None) -> set[str]:
    if library is None:
        return set()
    every = {**library.data.attributes, **library.data.patient_attributes}
    return {k for k, a in every.items() if a.type == "date"}


def _attributes(
    attributes: dict[str, Scalar],
    pseudonyms: Pseudonymiser,
    shift: Shift,
    dates: set[str],
    hidden: set[str],
) -> dict[str, Scalar]:
    found: dict[str, Scalar] = {}
    for key, value in attributes.items():
        if key in hidden:
            found[key] = withheld(pseudonyms, str(value))
        elif key in dates:
            moved = shift.iso_date(value)  # a value that is no ISO date cannot move: withheld
            found[key] = withheld(pseudonyms, str(value)) if moved is None else moved
        elif isinstance(value, str):
            found[key] = _text(pseudonyms, value) or value
        else:
            found[key] = value
    return found


def _source_text(event: Event, pseudonyms: Pseudonymiser) -> str | None:
    text = event.source_text
    numeric = event.value is not None and event.value.number is not None
    if text is not None and numeric and _NUMBER_TEXT.match(text):
        return text  # the measurement as written (its unit conversion is reported)
    return _text(pseudonyms, text)


def _event(
    event: Event,
    centre: str,
    study_id: str,
    pseudonyms: Pseudonymiser,
    shift: Shift,
    dates: set[str],
) -> Event:
    value = event.value
    if value is not None and value.text is not None:
        value = value.model_copy(update={"text": _text(pseudonyms, value.text)})
    return event.model_copy(
        update={
            "event_id": event_key(pseudonyms, centre, study_id, event.event_id),
            "when": shift.when(event.when),
            "end": shift.when(event.end),
            "value": value,
            "attributes": _attributes(event.attributes, pseudonyms, shift, dates, set()),
            "source_text": _source_text(event, pseudonyms),
            "assumed": _text(pseudonyms, event.assumed),
            "status": _text(pseudonyms, event.status),
        }
    )


def event_key(pseudonyms: Pseudonymiser, centre: str, study_id: str, event_id: str) -> str:
    """A sealed event's id: the keyed token the registry's event ids are made of
    (:func:`~fhir_cart.registry.merge.registry_event_namer`), so a registry built from
    sealed records names its events as one built from the clear ones did."""
    return "e" + pseudonyms.token("event", f"{centre}\x1f{study_id}\x1f{event_id}")[:20]


def seal(
    centre: str,
    cases: list[Case],
    rejects: list[Reject],
    unmapped_columns: list[str],
    sources: dict[str, dict[str, str]],
    definition: RegistryDef,
    pseudonyms: Pseudonymiser,
    library: ConceptLibrary | None,
    *,
    moved: bool = True,
) -> Sealed:
    """One centre's records as read from its file, sealed (pure). ``moved=False``: the
    dates stay where they are, in one pass what :func:`unseal` gives of the sealed records
    (the build's form of a centre read from its file)."""
    from fhir_cart.registry.linkage import linkage_record

    shift = Shift.of(pseudonyms) if moved else Shift(0, 0)
    dates = _date_attributes(library)
    linkage = definition.linkage
    hidden = set(linkage.identifiers) | set(linkage.names)
    hidden |= set(definition.pseudonymisation.drop_patient_attributes)
    sealed_cases, keys, located = [], {}, {}
    for case in cases:
        record = linkage_record(case, linkage, pseudonyms)
        name = record.pseudonym
        keys[name] = RecordKeys(record.identifiers, dict(record.names))
        patient = case.patient
        birth = patient.birth_date
        sealed_patient = patient.model_copy(
            update={
                "study_id": name,
                "birth_date": None if birth is None else shift.date(birth, patient.birth_precision),
                "attributes": _attributes(patient.attributes, pseudonyms, shift, dates, hidden),
            }
        )
        events = tuple(
            _event(e, centre, patient.study_id, pseudonyms, shift, dates) for e in case.events
        )
        sealed_cases.append(Case(patient=sealed_patient, events=events))
        rows = sources.get(patient.study_id, {})
        located[name] = {
            (
                "" if event_id == "" else event_key(pseudonyms, centre, patient.study_id, event_id)
            ): pseudonyms.source_row(centre, row)
            for event_id, row in rows.items()
        }
    sealed_rejects = [
        Reject(source="", row=None, column=r.column, value=None, reason="", table=r.table)
        for r in rejects
    ]
    columns = [_header(c) for c in unmapped_columns]
    return Sealed(centre, sealed_cases, keys, sealed_rejects, columns, located, sorted(dates))


def _header(where: Any) -> str:
    """An unmapped column by its header only (the quality report shows no more)."""
    return str(where).rsplit(" / ", 1)[-1]


def unseal(sealed: Sealed, pseudonyms: Pseudonymiser) -> Sealed:
    """The dates moved back (in memory only); everything else stays keyed."""
    shift, dates = Shift.of(pseudonyms), set(sealed.date_attributes)
    cases = []
    for case in sealed.cases:
        patient = case.patient
        birth = patient.birth_date
        moved = patient.model_copy(
            update={
                "birth_date": None
                if birth is None
                else shift.date(birth, patient.birth_precision, back=True),
                "attributes": {
                    k: shift.iso(v, back=True) if k in dates else v
                    for k, v in patient.attributes.items()
                },
            }
        )
        events = tuple(
            e.model_copy(
                update={
                    "when": shift.when(e.when, back=True),
                    "end": shift.when(e.end, back=True),
                    "attributes": {
                        k: shift.iso(v, back=True) if k in dates else v
                        for k, v in e.attributes.items()
                    },
                }
            )
            for e in case.events
        )
        cases.append(Case(patient=moved, events=events))
    return Sealed(
        sealed.centre,
        cases,
        sealed.keys,
        sealed.rejects,
        sealed.unmapped_columns,
        sealed.sources,
        sealed.date_attributes,
    )


# -- the file --------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    centre: str
    registry: str
    key: str
    """Fingerprint of the registry key (never the key)."""
    records: int
    source: dict[str, str]
    """The SHA-256 of the centre's file and mapping and when they were recorded (as
    Provenance cites them; never their names)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "format": EXTRACT_FORMAT,
            "version": EXTRACT_VERSION,
            "fhir_cart": __version__,
            "centre": self.centre,
            "registry": self.registry,
            "key_fingerprint": self.key,
            "records": self.records,
            "source": self.source,
            "dates": "moved by the registry's keyed offset (days; years for a year or month)",
        }


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def write_extract(path: Path, sealed: Sealed, manifest: Manifest) -> None:
    """The extract as one zip (manifest.json, records.json), the same bytes for the same
    inputs and key (fixed timestamps, sorted keys), written atomically."""
    records = {
        "records": [
            {
                "case": c.model_dump(mode="json"),
                "identifiers": list(sealed.keys[c.patient.study_id].identifiers),
                "names": {
                    k: None if v is None else list(v)
                    for k, v in sealed.keys[c.patient.study_id].names.items()
                },
                "rows": sealed.sources.get(c.patient.study_id, {}),
            }
            for c in sealed.cases
        ],
        "rejects": [{"table": r.table, "column": r.column} for r in sealed.rejects],
        "unmapped_columns": sealed.unmapped_columns,
        "date_attributes": sealed.date_attributes,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in (
            ("manifest.json", _dumps(manifest.as_json())),
            ("records.json", _dumps(records)),
        ):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    write_atomically(path, buffer.getvalue())


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as archive:
            raw = orjson.loads(archive.read("manifest.json"))
    except (OSError, zipfile.BadZipFile, KeyError, orjson.JSONDecodeError) as exc:
        raise ConfigError(
            f"extract {path}: not a registry extract ({type(exc).__name__}); make it with "
            "`fhir-cart registry extract` at the centre"
        ) from exc
    if raw.get("format") != EXTRACT_FORMAT or raw.get("version") != EXTRACT_VERSION:
        raise ConfigError(
            f"extract {path}: format {raw.get('format')!r} version {raw.get('version')!r}, "
            f"this fhir-cart reads {EXTRACT_FORMAT} version {EXTRACT_VERSION}"
        )
    return dict(raw)


def read_extract(path: Path, centre: str, pseudonyms: Pseudonymiser) -> Sealed:
    """A centre's extract, checked: its centre and its key fingerprint must be this
    registry's (ConfigError naming the file and the fix otherwise)."""
    manifest = read_manifest(path)
    if manifest.get("centre") != centre:
        raise ConfigError(
            f"extract {path}: made for centre {manifest.get('centre')!r}, the registry file "
            f"names it for {centre!r}; ask centre {centre} for its own extract"
        )
    if manifest.get("key_fingerprint") != pseudonyms.fingerprint():
        raise ConfigError(
            f"extract {path}: made under another registry key (fingerprint "
            f"{manifest.get('key_fingerprint')}, this build's {pseudonyms.fingerprint()}); "
            "the centre must make it again with the registry's key"
        )
    with zipfile.ZipFile(path) as archive:
        raw = orjson.loads(archive.read("records.json"))
    cases, keys, sources = [], {}, {}
    for item in raw["records"]:
        case = Case.model_validate(item["case"])
        name = case.patient.study_id
        cases.append(case)
        keys[name] = RecordKeys(
            tuple(item["identifiers"]),
            {k: None if v is None else tuple(str(x) for x in v) for k, v in item["names"].items()},
        )
        sources[name] = dict(item["rows"])
    rejects = [
        Reject(source="", row=None, column=r["column"], value=None, reason="", table=r["table"])
        for r in raw["rejects"]
    ]
    return Sealed(
        centre,
        cases,
        keys,
        rejects,
        list(raw["unmapped_columns"]),
        sources,
        list(raw["date_attributes"]),
    )


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
