"""`fhir-cart map --workers N`: patients checked, mapped and serialised by N processes while
the parent reads the study's rows, the output written by the parent in the study's order
(the same bytes as one process writes).

A study read patient by patient (:attr:`fhir_cart.study.StudyStream.split`: patient ids
known distinct, each patient's rows together) is split: the parent reads the CSV rows and
hands each patient's rows, in runs of :data:`RUN` consecutive patients, to forked
processes that check and assemble them into cases
(:meth:`~fhir_cart.study.read.PatientRows.assemble`), map each case
(:func:`~fhir_cart.mappers.to_fhir.map_case`) and serialise its NDJSON lines and bundle
entries (:func:`patient_output`); the parent writes each run's output when its turn comes
and keeps its rejects in order (the reject report is the same). A study that must be held
whole (ids repeated, or made by a mapping's word) is read and checked in the parent, and
only its cases go to the workers.
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_cart.bundle import BundleMode, entry_for, validate_resource
from fhir_cart.errors import FatalError
from fhir_cart.mappers.context import MappingContext
from fhir_cart.mappers.to_fhir import map_case
from fhir_cart.records import Case
from fhir_cart.study import StudyStream
from fhir_cart.study.read import Assembled, PatientRows, PatientUnit
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
    warnings: list[str] = field(default_factory=list)
    """What :attr:`Job.warn` said of the case (shown by the parent, in order)."""


@dataclass
class Job:
    """What every case is mapped with (``relative``: the context, relative references)."""

    relative: MappingContext
    mode: BundleMode
    validate: bool
    indent: bool
    warn: Callable[[Case], list[str]] = lambda case: []
    """Warnings about a case (a missing anchor event), made where the case is mapped."""


def patient_output(job: Job, case: Case) -> PatientOutput:
    """Map one case and serialise it."""
    resources, restyle = map_case(job.relative, case)
    if job.validate:
        for resource in resources:
            validate_resource(resource)
    lines = [(str(r["resourceType"]), orjson.dumps(r)) for r in resources]
    restyle("urn")
    return PatientOutput(lines, bundle_entries(resources, job.mode, job.indent), job.warn(case))


@dataclass
class _Done:
    """A run mapped in a worker: each patient's output, the unverified codes used, and
    (a run of patients' rows) what the stream must learn of them, without the cases."""

    outputs: list[PatientOutput]
    unverified: set[tuple[str, str, str]]
    assembled: Assembled | None = None


@dataclass
class _Failed:
    """A run whose mapping raised: the error, rebuilt in the parent."""

    kind: type[FatalError]
    message: str
    exit_code: int


_JOB: dict[str, Any] = {}
"""The job (and the study's split), set before the workers are forked (they inherit it)."""


def _map_run(cases: list[Case]) -> _Done | _Failed:
    job = _JOB["job"]
    terminology = job.relative.terminology
    try:
        outputs = [patient_output(job, case) for case in cases]
    except FatalError as exc:
        return _Failed(type(exc), exc.message, exc.exit_code)
    return _Done(outputs, set(terminology.unverified_used))


def _assemble_run(units: list[PatientUnit]) -> _Done | _Failed:
    split: PatientRows = _JOB["split"]
    assembled = split.assemble(units)
    done = _map_run(assembled.cases)
    if isinstance(done, _Done):
        assembled.cases = []  # mapped here: only their rejects go back
        done.assembled = assembled
    return done


def _runs(items: Iterable[Any]) -> Iterator[list[Any]]:
    run: list[Any] = []
    for item in items:
        run.append(item)
        if len(run) >= RUN:
            yield run
            run = []
    if run:
        yield run


def _received(job: Job, done: _Done | _Failed, split: PatientRows | None) -> list[PatientOutput]:
    if isinstance(done, _Failed):
        error = done.kind.__new__(done.kind)
        FatalError.__init__(error, done.message, exit_code=done.exit_code)
        raise error
    job.relative.terminology.unverified_used |= done.unverified
    if split is not None and done.assembled is not None:
        split.learn(done.assembled)
    return done.outputs


def mapped_outputs(job: Job, stream: StudyStream, workers: int) -> Iterator[PatientOutput]:
    """Each case's output, in the study's order: the first :data:`FIRST` patients (all of
    them with one worker) read and mapped here, the rest by ``workers`` processes (with
    the study's split, checked there too)."""
    split = stream.split if workers > 1 else None
    if split is None:
        yield from _from_cases(job, iter(stream), workers)
        return
    units = split.units()
    for unit in itertools.islice(units, FIRST):
        assembled = split.assemble([unit])
        split.learn(assembled)
        for case in assembled.cases:
            yield patient_output(job, case)
    yield from _in_workers(job, _assemble_run, _runs(units), workers, split)
    split.finish()


def _from_cases(job: Job, cases: Iterator[Case], workers: int) -> Iterator[PatientOutput]:
    for case in itertools.islice(cases, FIRST if workers > 1 else None):
        yield patient_output(job, case)
    yield from _in_workers(job, _map_run, _runs(cases), workers, None)


def _in_workers(
    job: Job,
    work: Callable[[list[Any]], _Done | _Failed],
    runs: Iterator[list[Any]],
    workers: int,
    split: PatientRows | None,
) -> Iterator[PatientOutput]:
    first = next(runs, None)
    if first is None:
        return
    _JOB.update(job=job, split=split)
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pending: deque[Any] = deque([pool.apply_async(work, (first,))])
            for run in runs:
                if len(pending) >= 2 * workers:
                    yield from _received(job, pending.popleft().get(), split)
                pending.append(pool.apply_async(work, (run,)))
            while pending:
                yield from _received(job, pending.popleft().get(), split)
    finally:
        _JOB.clear()
