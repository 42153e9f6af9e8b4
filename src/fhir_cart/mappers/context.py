"""What the pure mappers need besides the record: the concept library (and its terminology),
profiles, URLs and identifiers.

Built once per run (:func:`mapping_context`), then passed to every mapper call. Nothing here
does I/O after construction.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fhir_cart.library import Library
from fhir_cart.library.concepts import ConceptLibrary, ConceptsFile
from fhir_cart.library.profiles import Profiles, load_profiles
from fhir_cart.library.statuses import StatusTable
from fhir_cart.library.terminology import Terminology
from fhir_cart.mappers.kinds import IDENTIFIER_KINDS

__all__ = [
    "MappingContext",
    "Profiles",
    "RefStyle",
    "load_profiles",
    "mapping_context",
]

RefStyle = Literal["urn", "relative"]
"""``urn``: references are ``urn:uuid:...`` (inside a transaction bundle);
``relative``: ``Patient/<id>`` with ``id`` set on every resource (NDJSON)."""


_CENTRES_HELD = 10_000
"""At most this many identifier systems remembered by :meth:`MappingContext.centre_of_system`
(then it starts again): memory stays bounded whatever the input."""

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


@dataclass
class MappingContext:
    """The concept library, its terminology and the URLs mappers stamp on resources.

    ``terminology`` is the library's own (``concepts.terminology``): it holds the value sets
    of mappings/terminology.yaml plus the groups ``concept`` and ``attribute``. ``library``
    is the folder they came from (its status table decides what a pull keeps).
    ``other_bases``: identifier bases besides ``identifier_base`` whose systems are read
    back as a centre's (a pull knows every centre mapping's own base)."""

    concepts: ConceptLibrary
    profiles: Profiles
    identifier_base: str
    library: Library
    ref_style: RefStyle = "urn"
    other_bases: tuple[str, ...] = ()
    _systems: dict[tuple[str, str], str] = field(default_factory=dict)
    _ext_urls: dict[str, str] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict)
    """Look-ups derived from the library, built on first use by the mappers (no I/O)."""
    _centres: dict[str, str | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """:meth:`centre_of_system` per system seen (not carried over by ``replace``: the bases
    may differ there)."""

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

    @property
    def statuses(self) -> StatusTable:
        return self.library.statuses()

    def centre_of_system(self, system: str) -> str | None:
        """Inverse of :meth:`identifier_system`, under ``identifier_base`` or one of
        ``other_bases`` (None for a foreign system)."""
        if type(system) is not str:  # malformed input fails as it always did
            return self._centre_of_system(system)
        try:
            return self._centres[system]
        except KeyError:
            pass
        found = self._centre_of_system(system)
        if len(self._centres) >= _CENTRES_HELD:
            self._centres.clear()
        self._centres[system] = found
        return found

    def _centre_of_system(self, system: str) -> str | None:
        for base in (self.identifier_base, *self.other_bases):
            prefix = base.rstrip("/") + "/"
            if system.startswith(prefix):
                parts = system[len(prefix) :].split("/")
                if len(parts) == 2 and parts[1] in IDENTIFIER_KINDS:
                    return parts[0]
        return None

    def resource_id(self, system: str, value: str) -> str:
        """Stable logical id (a UUID) from a business identifier: ``uuid5`` (RFC 4122 name
        based, SHA-1) of ``system|value``, computed without building UUID objects."""
        return uuid5_text(f"{system}|{value}")

    def reference(self, resource_type: str, resource_id: str) -> str:
        if self.ref_style == "urn":
            return f"urn:uuid:{resource_id}"
        return f"{resource_type}/{resource_id}"

    def with_style(self, ref_style: RefStyle) -> MappingContext:
        """The same context (its look-ups shared) writing references in ``ref_style``."""
        return replace(self, ref_style=ref_style)


def mapping_context(
    *,
    library: Library | None = None,
    terminology: Terminology | None = None,
    identifier_base: str | None = None,
    ref_style: RefStyle = "urn",
    strict: bool = False,
    extra: ConceptsFile | None = None,
    country: str | None = None,
    other_bases: tuple[str, ...] = (),
) -> MappingContext:
    """The context of one run with ``library`` (default: the shipped one): ``extra`` holds a
    study mapping's own concepts and attributes (added to the library's concepts, never
    redefining a shared one)."""
    library = library or Library.default()
    terms = terminology or library.terminology(strict=strict, country=country)
    profiles = library.profiles()
    return MappingContext(
        concepts=library.concepts(extra, terminology=terms),
        profiles=profiles,
        identifier_base=identifier_base or profiles.identifier_base,
        library=library,
        ref_style=ref_style,
        other_bases=other_bases,
    )


def extension_value(extensions: list[dict[str, Any]] | None, url: str) -> dict[str, Any] | None:
    """The first extension with ``url`` (None when absent)."""
    for ext in extensions or ():
        if ext.get("url") == url:
            return ext
    return None
