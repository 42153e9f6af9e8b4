"""From cases to FHIR on disk or on the wire: mapping streams, transaction bundles, NDJSON.

Bundles are transactions whose entries are conditional on business identifiers
(http://hl7.org/fhir/R4/http.html#cond-update, #ccreate), so sending one twice creates nothing
new. Each patient's resources stay in one bundle: their urn:uuid references must resolve
inside the transaction (http://hl7.org/fhir/R4/bundle.html#references).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Literal
from urllib.parse import quote

import orjson

from fhir_cart.errors import FatalError
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.kinds import RESOURCE_KINDS
from fhir_cart.mappers.to_fhir import case_to_fhir
from fhir_cart.records import Case
from fhir_cart.types import Json

__all__ = [
    "BundleMode",
    "NdjsonWriter",
    "business_identifier",
    "content_hash",
    "entry_for",
    "has_identifier_search",
    "map_cases",
    "read_ndjson",
    "transaction_bundles",
    "validate_resource",
]

BundleMode = Literal["update", "create"]

# A type with no `identifier` search parameter in R4 (AdverseEvent,
# http://hl7.org/fhir/R4/adverseevent.html#search) cannot be found by a conditional write:
# it is written with PUT to its stable id (update-as-create), which is idempotent too.
_NO_IDENTIFIER_SEARCH = frozenset(k.type for k in RESOURCE_KINDS if not k.identifier_search)


def business_identifier(resource: Json) -> tuple[str, str]:
    """The (system, value) fhir_cart put first on a resource."""
    ident = resource["identifier"]
    first = ident if isinstance(ident, dict) else ident[0]
    return first["system"], first["value"]


def content_hash(resource: Json) -> str:
    """sha256 of the resource's canonical JSON (sorted keys), without id and meta.versionId."""
    body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    profile = (resource.get("meta") or {}).get("profile")
    if profile:
        body["meta"] = {"profile": profile}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def validate_resource(resource: Json) -> None:
    """Validate one resource with fhir.resources (R4B models); slow, for checks and --validate."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    rtype = str(resource.get("resourceType"))
    try:
        get_fhir_model_class(rtype).model_validate(resource)
    except (ValidationError, KeyError, ValueError) as exc:
        ref = f"{rtype}/{resource.get('id')}"
        raise FatalError(f"fhir_cart built an invalid {ref}: {exc}") from exc


def map_cases(
    ctx: MappingContext, cases: Iterable[Case], *, validate: bool = False
) -> Iterator[list[Json]]:
    """Yield each case's resources, one list per patient, streaming."""
    for case in cases:
        resources = case_to_fhir(ctx, case)
        if validate:
            for resource in resources:
                validate_resource(resource)
        yield resources


def has_identifier_search(resource_type: str) -> bool:
    """Whether a resource of this type is found by its business identifier (AdverseEvent
    has no identifier search parameter in R4)."""
    return resource_type not in _NO_IDENTIFIER_SEARCH


def entry_for(resource: Json, mode: BundleMode, *, by_id: bool = False) -> Json:
    """A transaction entry: conditional update (PUT) or conditional create (POST) on the
    business identifier; ``by_id`` (or a type without identifier search): PUT by the
    resource's stable id."""
    rtype = resource["resourceType"]
    if by_id or not has_identifier_search(rtype):
        url = f"{rtype}/{resource['id']}"
        return {
            "fullUrl": f"urn:uuid:{resource['id']}",
            "resource": resource,
            "request": {"method": "PUT", "url": url},
        }
    system, value = business_identifier(resource)
    search = "identifier=" + _quoted(system) + "%7C" + _quoted(value)
    body = {k: v for k, v in resource.items() if k != "id"}
    entry: Json = {"fullUrl": f"urn:uuid:{resource['id']}", "resource": body}
    if mode == "update":
        entry["request"] = {"method": "PUT", "url": f"{rtype}?{search}"}
    else:
        entry["request"] = {"method": "POST", "url": rtype, "ifNoneExist": search}
    return entry


_PLAIN = re.compile(r"[A-Za-z0-9_.~/:-]*")
"""Text that ``quote(text, safe=":/")`` leaves as it is."""


def _quoted(text: str) -> str:
    """``quote(text, safe=":/")``, skipping the work for text that needs no quoting."""
    return text if _PLAIN.fullmatch(text) else quote(text, safe=":/")


def transaction_bundles(
    per_patient: Iterable[list[Json]], *, size: int = 200, mode: BundleMode = "update"
) -> Iterator[Json]:
    """Chunk patients' resources into transaction bundles of at most ``size`` entries
    (a patient with more resources than ``size`` gets a bundle of their own)."""
    if size < 1:
        raise ValueError("bundle size must be at least 1")
    entries: list[Json] = []
    for resources in per_patient:
        if entries and len(entries) + len(resources) > size:
            yield _bundle(entries)
            entries = []
        entries.extend(entry_for(r, mode) for r in resources)
    if entries:
        yield _bundle(entries)


def _bundle(entries: list[Json]) -> Json:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


class NdjsonWriter:
    """One ``<Type>.ndjson`` file per resource type, written as resources stream by."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.counts: dict[str, int] = {}
        self._files: dict[str, IO[bytes]] = {}

    def __enter__(self) -> NdjsonWriter:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for handle in self._files.values():
            handle.close()

    def write(self, resource: Json) -> None:
        self.write_line(resource["resourceType"], orjson.dumps(resource))

    def write_line(self, rtype: str, line: bytes) -> None:
        """A resource of type ``rtype`` already serialised (``orjson.dumps``), as
        :meth:`write` writes it."""
        handle = self._files.get(rtype)
        if handle is None:
            handle = self._files[rtype] = (self.out_dir / f"{rtype}.ndjson").open("wb")
            self.counts[rtype] = 0
        handle.write(line)
        handle.write(b"\n")
        self.counts[rtype] += 1

    def write_all(self, resources: Iterable[Json]) -> None:
        for resource in resources:
            self.write(resource)

    @property
    def paths(self) -> list[Path]:
        return [self.out_dir / f"{t}.ndjson" for t in sorted(self._files)]


def read_ndjson(paths: Iterable[Path]) -> Iterator[Json]:
    """Stream resources from NDJSON files, line by line."""
    for path in paths:
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise FatalError(f"{path} line {number}: not JSON ({exc})") from exc
