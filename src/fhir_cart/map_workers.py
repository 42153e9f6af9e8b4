"""`fhir-cart map --workers N`: cases mapped and serialised by N processes while the parent
reads the study, the output written by the parent in the study's order (the same bytes as
one process writes).

Reading and checking the study stays in the parent (a patient's rows are checked against
the patients read before: duplicate ids, one reject per cause). The cases it reads go, in
runs of :data:`RUN` consecutive patients, to forked processes that map each case
(:func:`~fhir_cart.mappers.to_fhir.map_case`) and serialise its NDJSON lines and bundle
entries (:func:`patient_output`); the parent writes each run's output when its turn comes.
At most two runs per worker are out at a time, so memory stays bounded whatever the study's
size. The first :data:`FIRST` patients are mapped in the parent as they are read (a
smaller study starts no process). The unverified codes the workers emitted are added to
the parent's terminology (the job's ``unverified-codes.json``); an error raised while
mapping (``--strict`` and an unverified code, an invalid resource under ``--validate``)
stops the job as it would in one process.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_cart.bundle import BundleMode, entry_for, validate_resource
from fhir_cart.errors import FatalError
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.to_fhir import map_case
from fhir_cart.records import Case
from fhir_cart.types import Json

__all__ = [
    "FIRST",
    "RUN",
    "Job",
    "PatientOutput",
    "bundle_entries",
    "mapped_outputs",
    "patient_output",
]

RUN = 250
"""Patients per run handed to a worker."""
FIRST = 250
"""Patients mapped in the parent, as they are read, before any process is started."""


def bundle_entries(resources: Sequence[Json], mode: BundleMode, indent: bool) -> list[Any]:
    """A patient's transaction entries: dicts when the bundle is indented, else each
    entry's compact JSON (joined into the bundle as orjson would write it)."""
    entries = [entry_for(r, mode) for r in resources]
    return entries if indent else [orjson.dumps(e) for e in entries]


@dataclass
class PatientOutput:
    """One patient mapped and serialised: its NDJSON lines (type, JSON) with relative
    references, and its bundle entries with ``urn:uuid:`` ones."""

    lines: list[tuple[str, bytes]]
    entries: list[Any]


@dataclass
class Job:
    """What every case is mapped with (``relative``: the context, relative references)."""

    relative: MappingContext
    mode: BundleMode
    validate: bool
    indent: bool


def patient_output(job: Job, case: Case) -> PatientOutput:
    """Map one case and serialise it."""
    resources, restyle = map_case(job.relative, case)
    if job.validate:
        for resource in resources:
            validate_resource(resource)
    lines = [(str(r["resourceType"]), orjson.dumps(r)) for r in resources]
    restyle("urn")
    return PatientOutput(lines, bundle_entries(resources, job.mode, job.indent))


@dataclass
class _Done:
    """A run mapped in a worker: each patient's output, and the unverified codes used."""

    outputs: list[PatientOutput]
    unverified: set[tuple[str, str, str]]


@dataclass
class _Failed:
    """A run whose mapping raised: the error, rebuilt in the parent."""

    kind: type[FatalError]
    message: str
    exit_code: int


_JOB: dict[str, Job] = {}
"""The job, set before the workers are forked (they inherit it)."""


def _map_run(cases: list[Case]) -> _Done | _Failed:
    job = _JOB["job"]
    terminology = job.relative.terminology
    try:
        outputs = [patient_output(job, case) for case in cases]
    except FatalError as exc:
        return _Failed(type(exc), exc.message, exc.exit_code)
    return _Done(outputs, set(terminology.unverified_used))


def _runs(cases: Iterable[Case]) -> Iterator[list[Case]]:
    run: list[Case] = []
    for case in cases:
        run.append(case)
        if len(run) >= RUN:
            yield run
            run = []
    if run:
        yield run


def _received(job: Job, done: _Done | _Failed) -> list[PatientOutput]:
    if isinstance(done, _Failed):
        error = done.kind.__new__(done.kind)
        FatalError.__init__(error, done.message, exit_code=done.exit_code)
        raise error
    job.relative.terminology.unverified_used |= done.unverified
    return done.outputs


def mapped_outputs(job: Job, cases: Iterable[Case], workers: int) -> Iterator[PatientOutput]:
    """Each case's output, in the order the cases come: the first :data:`FIRST` cases (all
    of them with one worker) mapped here as they come, the rest by ``workers`` processes."""
    cases = iter(cases)
    for case in itertools.islice(cases, FIRST if workers > 1 else None):
        yield patient_output(job, case)
    runs = _runs(cases)
    first = next(runs, None)
    if first is None:
        return
    _JOB["job"] = job
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pending: deque[Any] = deque([pool.apply_async(_map_run, (first,))])
            for run in runs:
                if len(pending) >= 2 * workers:
                    yield from _received(job, pending.popleft().get())
                pending.append(pool.apply_async(_map_run, (run,)))
            while pending:
                yield from _received(job, pending.popleft().get())
    finally:
        _JOB.clear()
