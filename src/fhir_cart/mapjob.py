"""The `fhir-cart map` job, streaming: read, map and write patient by patient.

The study is read as a stream of cases (:func:`fhir_cart.study.stream_study`; how a file in
long format is read patient by patient is said there). Each case is mapped once
(:func:`fhir_cart.mappers.to_fhir.map_case`): its resources are written to the NDJSON files
with relative references, then their references are turned to ``urn:uuid:`` in place and
they join the transaction bundle being filled, which is written when it is full. Only one
patient's resources and one bundle are held at a time.

A study with rejected rows writes nothing but ``rejects.csv`` unless told to go on, as
before streaming; since rejects are known only once the whole file has been read, the
files are written into a staging folder inside the output folder and moved into place at
the end (or removed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fhir_cart.bundle import BundleMode, NdjsonWriter
from fhir_cart.collector import bulk_collection
from fhir_cart.errors import FatalError, Reject
from fhir_cart.library import Library
from fhir_cart.map_workers import Job, bundle_entries, mapped_outputs
from fhir_cart.mappers.context import MappingContext
from fhir_cart.records import Case
from fhir_cart.study import StudyStream, stream_study
from fhir_cart.types import Json

__all__ = ["BundleWriter", "MapResult", "open_study", "run_map"]


def open_study(
    path: Path, mapping_file: Path | None, library: Library | None = None
) -> tuple[StudyStream, Any]:
    """The study file as a stream of cases, and its mapping (None for canonical JSON), read
    against ``library`` (default: the shipped one)."""
    from fhir_cart.library.study_mapping import load_study_mapping

    if not path.exists():
        raise FatalError(f"{path}: no such file or folder", exit_code=2)
    library = library or Library.default()
    mapping = load_study_mapping(mapping_file, library) if mapping_file else None
    if mapping is None and path.suffix.lower() != ".json":
        raise FatalError(
            f"{path}: a --mapping file is needed for {path.suffix or 'a folder'}", exit_code=2
        )
    return stream_study(path, mapping, library.for_mapping(mapping)), mapping


class BundleWriter:
    """Transaction bundles of at most ``size`` entries written as patients come (a
    patient's entries stay in one bundle; one with more than ``size`` gets its own), as
    :func:`fhir_cart.bundle.transaction_bundles` makes them. Compact JSON unless ``indent``
    (two spaces): indentation made bundles about 40 % larger and cost most of the job's
    system time at 100,000 patients. Compact entries come as their JSON
    (:func:`fhir_cart.map_workers.patient_output`), and a bundle is written as orjson writes it."""

    def __init__(self, folder: Path, size: int, mode: BundleMode, *, indent: bool = False) -> None:
        if size < 1:
            raise ValueError("bundle size must be at least 1")
        self.folder = folder
        self.size = size
        self.mode = mode
        self.indent = indent
        self.count = 0
        self._entries: list[Any] = []
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, resources: Sequence[Json]) -> None:
        self.add_entries(bundle_entries(resources, self.mode, self.indent))

    def add_entries(self, entries: list[Any]) -> None:
        """One patient's entries: dicts when indenting, else each entry's compact JSON."""
        if self._entries and len(self._entries) + len(entries) > self.size:
            self.flush()
        self._entries.extend(entries)

    def flush(self) -> None:
        if not self._entries:
            return
        self.count += 1
        path = self.folder / f"bundle-{self.count:04d}.json"
        if self.indent:
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": self._entries}
            path.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
        else:  # the bytes orjson.dumps(bundle) gives: compact JSON, keys in this order
            path.write_bytes(_BUNDLE_HEAD + b",".join(self._entries) + b"]}")
        self._entries = []


_BUNDLE_HEAD = b'{"resourceType":"Bundle","type":"transaction","entry":['


@dataclass
class MapResult:
    patients: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    """Resources written, by type."""
    bundles: int = 0
    rejects: list[Reject] = field(default_factory=list)


def run_map(
    stream: StudyStream,
    ctx: MappingContext,
    out_dir: Path,
    *,
    bundle_size: int = 100,
    mode: BundleMode = "update",
    validate: bool = False,
    check_rejects: Callable[[list[Reject]], None] = lambda rejects: None,
    write_extras: Callable[[Path], None] = lambda staging: None,
    warn: Callable[[Case], list[str]] = lambda case: [],
    on_warnings: Callable[[list[str]], None] = lambda warnings: None,
    indent: bool = False,
    workers: int = 1,
) -> MapResult:
    """Map and write the stream into ``out_dir`` (ndjson/, bundles/). ``check_rejects`` is
    given every reject once the file is read; it raises to stop the job, and then nothing
    but what it wrote itself is left in ``out_dir``. ``write_extras`` writes further files
    into the staging folder, after the mapping (it may use what the mapping learned).
    ``warn`` says what to warn of each case (e.g. a missing anchor), where it is mapped;
    ``on_warnings`` is given those warnings here, in the study's order.
    ``indent``: bundles indented by two spaces (compact by default). ``workers`` > 1:
    patients are checked, mapped and serialised by that many processes while this one
    reads the study's rows (:mod:`fhir_cart.map_workers`); the files and the rejects are
    the same."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fhir-cart-map-", dir=out_dir))
    result = MapResult()
    relative = ctx.with_style("relative")
    try:
        with NdjsonWriter(staging / "ndjson") as writer, bulk_collection() as collector:
            bundles = BundleWriter(staging / "bundles", bundle_size, mode, indent=indent)
            job = Job(relative, mode, validate, indent, warn)
            for output in mapped_outputs(job, stream, workers):
                collector.step()
                if output.warnings:
                    on_warnings(output.warnings)
                for rtype, line in output.lines:
                    writer.write_line(rtype, line)
                bundles.add_entries(output.entries)
                result.patients += 1
            bundles.flush()
        result.counts, result.bundles, result.rejects = writer.counts, bundles.count, stream.rejects
        check_rejects(stream.rejects)
        write_extras(staging)
        _move_into(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _move_into(staging: Path, out_dir: Path) -> None:
    """Every staged file to its place in ``out_dir`` (files already there are replaced;
    others are left alone, as when the job wrote in place)."""
    for folder, _, files in os.walk(staging):
        target = out_dir / Path(folder).relative_to(staging)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.replace(Path(folder) / name, target / name)
