"""What the pure mappers need besides the record: the concept library (and its terminology),
profiles, URLs and identifiers.

Built once per run (:func:`mapping_context`), then passed to every mapper call. Nothing here
does I/O after construction.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from fhir_cart.concepts import ConceptLibrary, ConceptsFile, load_concepts
from fhir_cart.errors import ConfigError
from fhir_cart.terminology import Terminology, default_mappings_dir, load_terminology
from fhir_cart.yamlfile import read_yaml

__all__ = [
    "KINDS",
    "MappingContext",
    "Profiles",
    "RefStyle",
    "load_profiles",
    "mapping_context",
]

RefStyle = Literal["urn", "relative"]
"""``urn``: references are ``urn:uuid:...`` (inside a transaction bundle);
``relative``: ``Patient/<id>`` with ``id`` set on every resource (NDJSON)."""

KINDS = (
    "patient",
    "condition",
    "medication-administration",
    "procedure",
    "observation",
    "adverse-event",
)
"""Kinds of business identifier; each has its own identifier system per centre."""

_NAMESPACE = uuid.UUID("5b0a2f9e-2f43-4a53-9a4b-6b1f6f0c7c11")
_NAMESPACE_BYTES = _NAMESPACE.bytes


def uuid5_text(name: str) -> str:
    """``str(uuid.uuid5(_NAMESPACE, name))``, about three times faster."""
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Profiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    profiles: dict[str, str]
    extension_base: str
    identifier_base: str
    data_absent_reason: str
    """URL of the core extension that says why a required element has no value."""
    normalization_basis: str
    """URL of mCODE's extension naming the basis of a normalised dose."""
    cancer_related_reasons: frozenset[str] = frozenset()
    """Words of the ``reason`` attribute that make a drug or procedure cancer-related: only
    with one of them (or no reason) does it claim the cancer profile and point its
    ``reasonReference`` at the cancer diagnosis."""

    def cancer_related(self, reason: object) -> bool:
        """Whether an event given for this ``reason`` (a word) is about the cancer."""
        return reason in self.cancer_related_reasons


def load_profiles(path: Path | None = None) -> Profiles:
    path = path or default_mappings_dir() / "profiles.yaml"
    raw = read_yaml(path, "profiles file")
    try:
        return Profiles.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"cannot load profiles file {path}: {exc}") from exc


@dataclass
class MappingContext:
    """The concept library, its terminology and the URLs mappers stamp on resources.

    ``terminology`` is the library's own (``concepts.terminology``): it holds the value sets
    of mappings/terminology.yaml plus the groups ``concept`` and ``attribute``."""

    concepts: ConceptLibrary
    profiles: Profiles
    identifier_base: str
    ref_style: RefStyle = "urn"
    _systems: dict[tuple[str, str], str] = field(default_factory=dict)
    _ext_urls: dict[str, str] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict)
    """Look-ups derived from the library, built on first use by the mappers (no I/O)."""

    @property
    def terminology(self) -> Terminology:
        return self.concepts.terminology

    def ext(self, name: str) -> str:
        found = self._ext_urls.get(name)
        if found is None:
            found = self._ext_urls[name] = f"{self.profiles.extension_base}/{name}"
        return found

    def profile(self, kind: str) -> list[str] | None:
        url = self.profiles.profiles.get(kind)
        return [url] if url else None

    def identifier_system(self, centre: str, kind: str) -> str:
        key = (centre, kind)
        found = self._systems.get(key)
        if found is None:
            found = self._systems[key] = f"{self.identifier_base.rstrip('/')}/{centre}/{kind}"
        return found

    def centre_of_system(self, system: str) -> str | None:
        """Inverse of :meth:`identifier_system` (None for a foreign system)."""
        base = self.identifier_base.rstrip("/") + "/"
        if not system.startswith(base):
            return None
        parts = system[len(base) :].split("/")
        return parts[0] if len(parts) == 2 and parts[1] in KINDS else None

    def resource_id(self, system: str, value: str) -> str:
        """Stable logical id (a UUID) from a business identifier: ``uuid5`` (RFC 4122 name
        based, SHA-1) of ``system|value``, computed without building UUID objects."""
        return uuid5_text(f"{system}|{value}")

    def reference(self, resource_type: str, resource_id: str) -> str:
        if self.ref_style == "urn":
            return f"urn:uuid:{resource_id}"
        return f"{resource_type}/{resource_id}"

    def with_style(self, ref_style: RefStyle) -> MappingContext:
        return MappingContext(
            self.concepts, self.profiles, self.identifier_base, ref_style, self._systems,
            self._ext_urls, self.memo,
        )  # fmt: skip


def mapping_context(
    *,
    terminology: Terminology | None = None,
    identifier_base: str | None = None,
    ref_style: RefStyle = "urn",
    strict: bool = False,
    mappings_dir: Path | None = None,
    extra: ConceptsFile | None = None,
    country: str | None = None,
) -> MappingContext:
    """The context of one run: ``extra`` holds a study mapping's own concepts and attributes
    (added to mappings/concepts.yaml, never redefining a shared one)."""
    base = mappings_dir or default_mappings_dir()
    terms = terminology or load_terminology(
        base / "terminology.yaml", strict=strict, country=country
    )
    profiles = load_profiles(base / "profiles.yaml")
    return MappingContext(
        concepts=load_concepts(terms, base / "concepts.yaml", extra),
        profiles=profiles,
        identifier_base=identifier_base or profiles.identifier_base,
        ref_style=ref_style,
    )


def extension_value(extensions: list[dict[str, Any]] | None, url: str) -> dict[str, Any] | None:
    """The first extension with ``url`` (None when absent)."""
    for ext in extensions or ():
        if ext.get("url") == url:
            return ext
    return None
