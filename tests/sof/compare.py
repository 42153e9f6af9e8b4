"""Compare the rows a SQL-on-FHIR engine gives for fhir_cart's ViewDefinitions with the
study tables `fhir-cart tables` writes for the same NDJSON (tests/unit/conformance/test_views.py).

Only what a view expresses is compared (fhir_cart.conformance.views.NOT_EXPRESSED says what
it does not): the columns each view has, after three documented normalisations, the same
a hospital's SQL does: an event's ``study_id`` is its patient's (joined on
``patient_key``), ``event_id`` loses the ``<study_id>/`` the identifier holds (an event
with no fhir_cart identifier, given by its resource id, gets fhir_cart's ``<kind>-``
before it, and an id longer than 64 characters is shortened as fhir_cart shortens it: 55
characters, ``-``, the first 8 hex digits of its SHA-256), and ``when_date``/``end_date``
keep the day of a dateTime (first 10 characters).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

Row = dict[str, str | None]

ROOT = Path(__file__).resolve().parents[2]
SOF_PYTHON = Path(os.environ.get("FHIR_CART_SOF_PYTHON", ROOT / ".cache/sof-venv/bin/python"))
RUNNER = Path(__file__).with_name("run_views.py")
_DATES = ("when_date", "end_date")
_KEYS = ("patient_key", "study_id", "event_id", "concept")


def engine_rows(engine: str, ndjson: Path, views: Path) -> dict[str, list[Row]]:
    """Rows per view, as the engine gives them (every value a string or None)."""
    done = subprocess.run(
        [str(SOF_PYTHON), str(RUNNER), "--engine", engine, str(ndjson), str(views)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise AssertionError(f"{engine} engine failed (exit {done.returncode})")
    found: dict[str, list[Row]] = json.loads(done.stdout)
    return found


def table_rows(path: Path) -> list[Row]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [{k: (v if v != "" else None) for k, v in r.items()} for r in csv.DictReader(handle)]


def _same(want: str | None, got: str | None) -> bool:
    if want is None or got is None:
        return want is got
    if want == got or want.lower() == got.lower():  # booleans: True (CSV) / true (FHIRPath)
        return True
    try:
        a, b = float(want), float(got)
    except ValueError:
        return False
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


_ID_KINDS = {
    "events_condition": "condition",
    "events_medication": "medication-administration",
    "events_procedure": "procedure",
    "events_observation": "observation",
    "events_adverse_event": "adverse-event",
}
"""View -> the kind fhir_cart puts before a resource id in an EHR event's id."""


def _event(row: Row, study_ids: dict[str, str], view: str) -> Row:
    out = dict(row)
    key = row.get("patient_key")
    sid = study_ids.get(str(key))
    out["study_id"] = sid
    event_id = row.get("event_id")
    if sid is not None and event_id is not None and event_id.startswith(sid + "/"):
        out["event_id"] = event_id[len(sid) + 1 :]
    elif event_id is not None:  # the resource id: fhir_cart's id is <kind>-<id>, shortened
        event_id = f"{_ID_KINDS[view]}-{event_id}"
        if len(event_id) > 64:
            digest = hashlib.sha256(event_id.encode()).hexdigest()[:8]
            event_id = f"{event_id[:55]}-{digest}"
        out["event_id"] = event_id
    for name in _DATES:
        if out.get(name) is not None:
            out[name] = str(out[name])[:10]
    return out


def view_events(rows: dict[str, list[Row]]) -> list[Row]:
    """Every ``events_*`` view's rows with the patient's study id joined in."""
    study_ids = {str(r["patient_key"]): str(r["study_id"]) for r in rows["patients"]}
    out = []
    for name, found in rows.items():
        if name.startswith("events_"):
            out += [_event(r, study_ids, name) | {"_view": name} for r in found]
    return out


def _differences(label: str, want: Row, got: Row) -> list[str]:
    out = []
    for column, value in got.items():
        if column in ("patient_key", "_view") or (column not in want and value is None):
            continue
        if column not in want:
            out.append(f"{label}: view column {column} is no column of the table")
        elif not _same(want[column], value):
            out.append(f"{label}: {column} table {want[column]!r} view {value!r}")
    return out


def compare_patients(table: list[Row], rows: list[Row]) -> list[str]:
    by_id = {r["study_id"]: r for r in table}
    got = {r["study_id"]: r for r in rows}
    out = [f"patient {s}: in the table, not in the view" for s in sorted(set(by_id) - set(got))]
    out += [f"patient {s}: in the view, not in the table" for s in sorted(set(got) - set(by_id))]
    for sid in sorted(set(by_id) & set(got)):
        out += _differences(f"patient {sid}", by_id[sid], got[sid])
    return out


def _event_key(row: Row) -> tuple[Any, ...]:
    if row.get("event_id") is None:  # death, follow-up: one per patient and concept
        return (row["study_id"], row["concept"])
    return (row["study_id"], row["event_id"])


def compare_events(
    table: list[Row], events: list[Row], *, not_covered: Any = lambda row: False
) -> tuple[list[str], int, int]:
    """Differences, how many table rows were compared and how many left out:
    ``not_covered(row)`` says a table row no view is meant to give (NOT_EXPRESSED)."""
    keyed = {_event_key(r): r for r in events}
    ids = {(r["study_id"], r["event_id"]): r for r in table}
    by_concept = {(r["study_id"], r["concept"]): r for r in table}
    out, compared, left_out = [], 0, 0
    for key, got in sorted(keyed.items(), key=lambda kv: str(kv[0])):
        want = ids.get(key) if got.get("event_id") is not None else by_concept.get(key)
        if want is None:
            out.append(f"event {key} ({got['_view']}): in the view, not in the table")
            continue
        compared += 1
        out += _differences(f"event {key}", want, got)
    seen = {(r["study_id"], r["concept"]) for r in events if r.get("event_id") is None}
    for row in table:
        if (row["study_id"], row["event_id"]) in keyed or (row["study_id"], row["concept"]) in seen:
            continue
        if not_covered(row):
            left_out += 1
        else:
            out.append(f"event {(row['study_id'], row['event_id'])}: in the table, not in a view")
    return out, compared, left_out
