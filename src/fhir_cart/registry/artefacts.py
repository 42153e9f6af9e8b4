"""Pushing the registry's own FHIR artefacts (ConceptMaps, Provenance) beside its patients.

Their ids are deterministic, so each goes as an update-as-create ``PUT Type/id``
(https://hl7.org/fhir/R4/http.html#upsert). Only artefacts whose content hash differs from
the one last pushed to that server are sent; the hashes live in the registry's work folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from fhir_cart.client import FhirClient
from fhir_cart.registry.files import write_atomically

__all__ = ["PushedHashes", "push_artefacts"]


def _hash(resource: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()


class PushedHashes:
    """Content hashes of the artefacts last pushed to one server (a JSON file)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.hashes: dict[str, str] = {}
        if path is not None and path.exists():
            try:
                self.hashes = dict(orjson.loads(path.read_bytes()))
            except (orjson.JSONDecodeError, TypeError, ValueError):
                self.hashes = {}  # unreadable (killed mid-write): everything is sent again

    def save(self) -> None:
        if self.path is not None:
            write_atomically(self.path, orjson.dumps(self.hashes, option=orjson.OPT_SORT_KEYS))


async def push_artefacts(
    client: FhirClient, resources: Sequence[dict[str, Any]], pushed: PushedHashes
) -> int:
    """PUT every artefact whose content changed since the last push; returns how many.
    A hash is recorded only after the server took the resource."""
    sent = 0
    for resource in resources:
        key = f"{resource['resourceType']}/{resource['id']}"
        digest = _hash(resource)
        if pushed.hashes.get(key) == digest:
            continue
        await client.update(resource)
        pushed.hashes[key] = digest
        sent += 1
    pushed.save()
    return sent
