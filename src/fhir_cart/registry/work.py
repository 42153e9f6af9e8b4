"""The registry holder's working copy (``WorkFolder``) and what it keeps: each centre's
records as the build uses them (``CentreData``) and the probabilistic links a later run may
reuse (``LinkState``). Split from :mod:`fhir_cart.registry.build`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fhir_cart import __version__
from fhir_cart.errors import Reject
from fhir_cart.records import Case
from fhir_cart.registry import tables
from fhir_cart.registry.extract import RecordKeys
from fhir_cart.registry.linkage import Link

__all__ = ["CentreData", "LinkState", "WorkFolder"]

log = logging.getLogger("fhir_cart.registry.build")  # as before the split


@dataclass
class CentreData:
    """What a centre's reader gives (spec: ``ReadResult(cases, rejects, unmapped_columns)``)."""

    cases: list[Case]
    rejects: list[Reject] = field(default_factory=list)
    unmapped_columns: list[Any] = field(default_factory=list)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    """Study id -> {"" (the patient's row) and event id -> ``file, sheet S, row N``}."""
    keys: dict[str, RecordKeys] | None = None
    """Sealed records (:mod:`.extract`): record pseudonym -> its keyed linkage keys; study
    ids are then pseudonyms and ``sources`` holds row tokens."""


@dataclass
class LinkState:
    """What a later run may reuse: the probabilistic links (pseudonyms and probabilities
    only) scored for each centre's inputs, and the model that scored them."""

    linkage: str
    centres: dict[str, str]
    links: list[Link] = field(default_factory=list)
    model: dict[str, Any] | None = None
    scored: list[str] = field(default_factory=list)
    """Centres whose pairs this run scored (all of them on a first run)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "linkage": self.linkage,
            "centres": self.centres,
            "links": [[k.left, k.right, k.probability, dict(k.evidence)] for k in self.links],
            "model": self.model,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LinkState:
        links = [
            Link(
                k[0],
                k[1],
                float(k[2]),
                "probabilistic",
                tuple((str(n), int(v)) for n, v in (k[3] if len(k) > 3 else {}).items()),
            )
            for k in raw["links"]
        ]
        return cls(raw["linkage"], dict(raw["centres"]), links, raw.get("model"))


class WorkFolder:
    """The registry holder's working copy, so that a rebuild reads again only the centres
    whose files changed and scores only the pairs that touch them.

    It holds each centre's records sealed as the build uses them (identifiers, names and
    free text only as keyed tokens, but the dates as read): keep it where the centre files
    are kept, never beside the registry output."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.notes: list[str] = []
        """What could not be reused, and why (a work file that could not be read)."""

    def _unreadable(self, path: Path, exc: Exception, then: str) -> None:
        note = f"work file {path.name} could not be read ({type(exc).__name__}): {then}"
        log.warning("registry %s", note)
        self.notes.append(note)

    def centre(self, centre_id: str, inputs: str) -> CentreData | None:
        """The centre's records as last read, or None when they must be read again: the
        inputs changed, or the work file is missing or unreadable (a truncated file from an
        older version killed mid-write is treated as stale, never as an error)."""
        path = self.folder / "centres" / f"{centre_id}.json"
        if not path.exists():
            return None
        try:
            raw = orjson.loads(path.read_bytes())
            if raw.get("inputs") != inputs or raw.get("fhir_cart") != __version__:
                return None
            return CentreData(
                [Case.model_validate(c) for c in raw["cases"]],
                [Reject(**r) for r in raw["rejects"]],
                list(raw["unmapped"]),
                dict(raw.get("sources", {})),
                {
                    name: RecordKeys(
                        tuple(k[0]), {n: None if v is None else tuple(v) for n, v in k[1].items()}
                    )
                    for name, k in raw["keys"].items()
                },
            )
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self._unreadable(path, exc, f"centre {centre_id} is read again")
            return None

    def save_centre(self, centre_id: str, inputs: str, data: CentreData) -> None:
        raw = {
            "inputs": inputs,
            "fhir_cart": __version__,
            "cases": [c.model_dump(mode="json") for c in data.cases],
            "rejects": [r.as_dict() for r in data.rejects],
            "unmapped": [str(u) for u in data.unmapped_columns],
            "sources": data.sources,
            "keys": {
                name: [
                    list(k.identifiers),
                    {n: None if v is None else list(v) for n, v in k.names.items()},
                ]
                for name, k in (data.keys or {}).items()
            },
        }
        tables._write_if_changed(self.folder / "centres" / f"{centre_id}.json", orjson.dumps(raw))

    def link_state(self) -> LinkState | None:
        path = self.folder / "links.json"
        if not path.exists():
            return None
        try:
            return LinkState.from_json(orjson.loads(path.read_bytes()))
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self._unreadable(path, exc, "every pair is scored again")
            return None

    def save_link_state(self, state: LinkState) -> None:
        tables._write_if_changed(self.folder / "links.json", orjson.dumps(state.as_json()))

    def save_ids(self, ledger: bytes) -> None:
        """A copy of the build's id ledger (``registry-ids.json``: pseudonyms and registry
        ids only), read when a build writes to a folder that has none (a new job's)."""
        tables._write_if_changed(self.folder / "registry-ids.json", ledger)
