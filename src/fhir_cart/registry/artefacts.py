"""Pushing the registry's own FHIR artefacts (ConceptMaps, Provenance) beside its patients.

Their ids are deterministic, so each goes as an update-as-create ``PUT Type/id``
(https://hl7.org/fhir/R4/http.html#upsert). Only artefacts whose content hash differs from
the one last pushed to that server are sent; the hashes (and the version the server gave)
live in the registry's work folder. The local file is not trusted on its own: as for patient
resources (:func:`fhir_cart.sync.push.verify_on_server`), the artefacts it says are there
are looked up on the server (one ``_id`` search per 100), and those the server no longer
holds, or holds at another version (wiped, restored, edited), are sent again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from fhir_cart.client import FhirClient
from fhir_cart.registry.files import write_atomically

__all__ = ["PushedHashes", "push_artefacts"]

log = logging.getLogger(__name__)


def _hash(resource: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()


class PushedHashes:
    """Content hashes of the artefacts last pushed to one server, and the version the server
    gave each (a JSON file)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.hashes: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        if path is not None and path.exists():
            try:
                raw = dict(orjson.loads(path.read_bytes()))
            except (orjson.JSONDecodeError, TypeError, ValueError):
                raw = {}  # unreadable (killed mid-write): everything is sent again
            if isinstance(raw.get("hashes"), dict):
                self.hashes = dict(raw["hashes"])
                self.versions = dict(raw.get("versions") or {})
            else:  # the file of an earlier version: hashes only
                self.hashes = {k: v for k, v in raw.items() if isinstance(v, str)}

    def save(self) -> None:
        if self.path is not None:
            data = {"hashes": self.hashes, "versions": self.versions}
            write_atomically(self.path, orjson.dumps(data, option=orjson.OPT_SORT_KEYS))


async def push_artefacts(
    client: FhirClient, resources: Sequence[dict[str, Any]], pushed: PushedHashes
) -> int:
    """PUT every artefact whose content changed since the last push, or that the server no
    longer holds as recorded; returns how many. A hash is recorded only after the server
    took the resource."""
    from fhir_cart.sync.push import verify_on_server

    def name(resource: dict[str, Any]) -> str:
        return f"{resource['resourceType']}/{resource['id']}"

    same = [r for r in resources if pushed.hashes.get(name(r)) == _hash(r)]
    believed = {
        (r["resourceType"], r["id"], ""): (str(r["id"]), pushed.versions.get(name(r))) for r in same
    }
    gone = {f"{t}/{i}" for t, i, _ in await verify_on_server(client, believed)} if same else set()
    if gone:
        log.warning(
            "%d registry artefacts recorded as pushed are not on the server as "
            "recorded (wiped, restored or changed there): sending them again",
            len(gone),
        )
    sent = 0
    for resource in resources:
        key = name(resource)
        digest = _hash(resource)
        if pushed.hashes.get(key) == digest and key not in gone:
            continue
        answer = await client.update(resource)
        pushed.hashes[key] = digest
        version = (answer.get("meta") or {}).get("versionId") if isinstance(answer, dict) else None
        if version:
            pushed.versions[key] = str(version)
        else:
            pushed.versions.pop(key, None)
        sent += 1
    pushed.save()
    return sent
