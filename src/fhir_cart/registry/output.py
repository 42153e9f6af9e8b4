"""The files a registry build writes (tables, reports, summaries, FHIR artefacts, the id
ledger), each only when its bytes changed; and the last build's id ledger read back."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from fhir_cart.csv_safety import csv_bytes
from fhir_cart.registry import tables
from fhir_cart.registry.files import write_stream_if_changed
from fhir_cart.registry.ids import IdLedger
from fhir_cart.registry.review import REVIEW_HEADER

if TYPE_CHECKING:
    from fhir_cart.library.concepts import ConceptLibrary
    from fhir_cart.registry.build import Registry
    from fhir_cart.registry.definition import RegistryDef
    from fhir_cart.registry.linkage import Link

__all__ = ["IDS_FILE", "json_bytes", "read_ids", "write_registry"]

log = logging.getLogger("fhir_cart.registry.build")


def json_bytes(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def _conflicts_csv(rows: list[dict[str, Any]]) -> bytes:
    return csv_bytes(
        ["patient", "field", "centre", "value", "rule", "chosen", "result"],
        (
            [row["patient"], row["field"], centre, value, row["rule"], row["chosen"], row["result"]]
            for row in sorted(rows, key=lambda r: (r["patient"], r["field"]))
            for centre, value in sorted(row["values"].items())
        ),
    )


def _links_csv(links: list[Link], refused: list[Link], blocked: list[Link]) -> bytes:
    return csv_bytes(
        ["left", "right", "method", "probability", "taken"],
        [
            *([k.left, k.right, k.method, f"{k.probability:.6f}", "yes"] for k in links),
            *(
                [k.left, k.right, k.method, f"{k.probability:.6f}", "no (same centre)"]
                for k in refused
            ),
            *(
                [k.left, k.right, k.method, f"{k.probability:.6f}", "no (decided apart)"]
                for k in blocked
            ),
        ],
    )


def _crosswalk_csv(ledger: IdLedger | None) -> bytes:
    retired = {} if ledger is None else ledger.retired
    return csv_bytes(
        ["old_id", "new_id", "change"],
        (
            [old, new, entry.reason]
            for old, entry in sorted(retired.items())
            for new in (entry.successors or ("",))
        ),
    )


IDS_FILE = "registry-ids.json"


def read_ids(out: Path) -> tuple[IdLedger | None, list[str]]:
    """The last build's id ledger in ``out`` (None on a first build), and a note when it
    could not be read (every patient then gets a fresh id, which the note says)."""
    path = out / IDS_FILE
    if not path.exists():
        return None, []
    try:
        return IdLedger.from_json(orjson.loads(path.read_bytes())), []
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        note = (
            f"{IDS_FILE} could not be read ({type(exc).__name__}): registry ids start afresh "
            "(restore the file from a backup and build again with --force to keep them)"
        )
        log.warning("registry %s", note)
        return None, [note]


def write_registry(
    out: Path, registry: Registry, definition: RegistryDef, library: ConceptLibrary | None
) -> list[Path]:
    published = registry.published
    if published is None:
        raise ValueError("a registry is written from what its build gathered (published)")
    built = {"patients": published.patients, "events": published.events}
    files = tables.write_tables(out / "tables", built, definition.outputs.formats)
    outputs: dict[str, bytes | None] = {
        "reports/conflicts.csv": _conflicts_csv(registry.conflicts),
        "reports/conflicts.json": json_bytes(
            sorted(registry.conflicts, key=lambda r: (r["patient"], r["field"]))
        ),
        "reports/quality.json": json_bytes(registry.quality),
        "reports/links.csv": _links_csv(registry.links, registry.refused, registry.blocked),
        "reports/review.csv": csv_bytes(REVIEW_HEADER, (r.row() for r in registry.review)),
        "reports/crosswalk.csv": _crosswalk_csv(registry.ids),
        IDS_FILE: json_bytes(None if registry.ids is None else registry.ids.as_json()),
        "summaries.json": json_bytes(registry.summaries),
        "fhir/Provenance.ndjson": None,  # streamed from the build's temporary file
        **{f"fhir/ConceptMap-{m['id']}.json": json_bytes(m) for m in registry.concept_maps},
    }
    for name, data in outputs.items():
        path = out / name
        if data is None:
            with published.provenance as stream:  # the temporary file goes when written
                write_stream_if_changed(path, stream)
        else:
            tables._write_if_changed(path, data)
        files.append(path)
    return files
