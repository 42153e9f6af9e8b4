"""Checking uploads for the pages in the background, and each upload's check and summary
kept, so that no page waits for a file to be read (issue 22: every page under 200 ms).

- Every upload the page receives is stored at once and checked by a thread pool (never the
  event loop: every other page keeps answering); the form's POST answers with a redirect
  at once. The check page waits up to :data:`SETTLE` seconds (holding no thread) for the
  check to end, so a small file's check is shown straight away; else it shows a progress
  bar (patients read of the file's rows) that htmx refreshes until the check is done.
- Right after the check, the upload's summary (measures, plots) is worked out in the pool
  from the records the check read (the file is read once); the summary page shows that it
  is being computed, and htmx loads it when it is ready.
- The check of an upload (rejects, the grid, the records, one patient's FHIR) and its
  summary are kept in memory per upload, keyed by the upload's files' times: an upload
  never changes, so they are worked out once per process. At most :data:`KEPT` of each are
  held; a page asked for one that is not kept (a second worker, a restart, an upload
  pushed out) starts it in the pool and shows its progress, as after the upload.

Progress lives in this process: a check started here is followed here.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import logging
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from fastapi import Request

from fhir_cart.errors import FhirCartError, InputError
from fhir_cart.private import private_dir, write_private
from fhir_cart.service.access import Principal, can_see_upload, owner_params
from fhir_cart.service.routers import study as study_routes

__all__ = [
    "KEPT",
    "SETTLE",
    "CheckState",
    "Checks",
    "check_or_start",
    "count_rows",
    "kept",
    "settle",
    "store",
    "summary_or_start",
    "upload_key",
]

log = logging.getLogger(__name__)

KEPT = 32
SETTLE = 0.1
"""Seconds a check or summary page waits for the work to end before it shows its progress
instead (a few dozen patients are read within it)."""


@dataclass
class CheckState:
    """A background check: ``running`` until it is ``done`` or ``failed``."""

    meta: dict[str, Any]
    total: int
    done: int = 0
    status: str = "running"
    error: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    removed: bool = False
    """A failed check of a new upload removes it (a refused upload leaves nothing); a
    failed check again of a kept upload (e.g. after the mapping assistant) does not."""

    @property
    def finished(self) -> bool:
        return self.status != "running"


def count_rows(path: Path) -> int:
    """Data rows of a CSV file (lines after the header; 0 for other kinds: the bar then
    shows patients read without a total)."""
    if path.suffix.lower() != ".csv":
        return 0
    with path.open("rb") as handle:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    return max(lines - 1, 0)


class _Kept:
    """The last :data:`KEPT` values by key (thread-safe)."""

    def __init__(self) -> None:
        self._held: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._making: dict[tuple[Any, ...], threading.Lock] = {}

    def making(self, key: tuple[Any, ...]) -> threading.Lock:
        """The lock of one key's work: worked out once while others wait for it (a summary
        writes its plots' files: twice at once would interleave them)."""
        with self._lock:
            return self._making.setdefault(key, threading.Lock())

    def get(self, key: tuple[Any, ...]) -> Any:
        with self._lock:
            if key in self._held:
                self._held.move_to_end(key)
                return self._held[key]
        return None

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        with self._lock:
            self._held[key] = value
            while len(self._held) > KEPT:
                self._held.popitem(last=False)


def upload_key(upload_id: str, meta: dict[str, Any]) -> tuple[Any, ...]:
    """An upload's files and their times: what a kept check or summary depends on."""
    files = [meta.get("study_file"), meta.get("mapping_file")]
    times = tuple(Path(f).stat().st_mtime_ns if f and Path(f).exists() else 0 for f in files)
    return (upload_id, *files, *times)


def kept(store: _Kept, upload_id: str, meta: dict[str, Any], work: Callable[[], Any]) -> Any:
    """What ``work`` gives for the upload, worked out once while the upload is unchanged."""
    key = upload_key(upload_id, meta)
    found = store.get(key)
    if found is not None:
        return found
    with store.making(key):
        found = store.get(key)
        if found is None:
            found = work()
            store.put(key, found)
    return found


class Checks:
    """Background checks and the kept checks and summaries of one service process."""

    def __init__(self, workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="check")
        self._states: dict[str, CheckState] = {}
        self._lock = threading.Lock()
        self.checks = _Kept()
        self.summaries = _Kept()
        self._summarising: dict[tuple[Any, ...], Future[Any]] = {}

    def summary(self, upload_id: str, meta: dict[str, Any], work: Callable[[], Any]) -> Future[Any]:
        """The upload's summary (``work``) worked out in the pool, once: a summary already
        under way (or failed) is given again; its future (done: kept, or its failure)."""
        key = upload_key(upload_id, meta)
        with self._lock:
            future = self._summarising.get(key)
            if future is not None:
                return future
            if len(self._summarising) > 200:  # failures are forgotten after a while
                for old in [k for k, f in self._summarising.items() if f.done()][:100]:
                    del self._summarising[old]
            try:
                future = self._pool.submit(kept, self.summaries, upload_id, meta, work)
            except RuntimeError as exc:  # the service stops: the check stays good
                stopped: Future[Any] = Future()
                stopped.set_exception(exc)
                return stopped
            self._summarising[key] = future
        future.add_done_callback(functools.partial(self._summarised, key))
        return future

    def _summarised(self, key: tuple[Any, ...], future: Future[Any]) -> None:
        failure = None if future.cancelled() else future.exception()
        if failure is None:  # kept in self.summaries: the future is not needed any more
            with self._lock:
                self._summarising.pop(key, None)
        else:
            log.info("summary failed: %s", failure.__class__.__name__)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def state(self, upload_id: str, principal: Principal) -> CheckState | None:
        """The background check of an upload in the principal's scope (None: none here)."""
        with self._lock:
            state = self._states.get(upload_id)
        return state if state is not None and can_see_upload(principal, state.meta) else None

    def start(
        self,
        upload_id: str,
        meta: dict[str, Any],
        work: Callable[[Callable[[int], None]], Any],
        on_failure: Callable[[], None] | None,
    ) -> CheckState:
        """Run ``work(progress)`` in the pool: it reads the upload, calling ``progress(n)``
        per patient, and keeps its check (a check of the upload still running here is
        given instead of a second). A FhirCartError fails the check with its message (and
        rejects); ``on_failure``, if any, then runs (a new upload is removed, as a refused
        upload leaves nothing)."""
        with self._lock:
            running = self._states.get(upload_id)
            if running is not None and not running.finished:
                return running
        state = CheckState(meta, count_rows(Path(meta["study_file"])))
        with self._lock:
            if len(self._states) > 200:  # ended checks are forgotten after a while
                for key in [k for k, v in self._states.items() if v.finished][:100]:
                    del self._states[key]
            self._states[upload_id] = state

        def progress(n: int) -> None:
            state.done = n

        def fail(error: str, errors: Sequence[dict[str, Any]] = ()) -> None:
            state.error, state.errors = error, list(errors)
            if on_failure is not None:
                on_failure()
                state.removed = True
            state.status = "failed"  # last: a page that sees it sees the rest

        def run() -> None:
            try:
                work(progress)
                state.status = "done"
            except InputError as exc:
                fail(str(exc), [r.as_dict() for r in exc.rejects[: InputError.shown]])
            except FhirCartError as exc:
                fail(str(exc))
            except csv.Error as exc:  # e.g. a field over the csv module's 131,072 characters
                fail(f"the CSV file cannot be read: {exc}")
            except Exception as exc:  # the check's failure is the page's to show
                log.warning("background check failed: %s", exc.__class__.__name__)
                fail(f"the check failed ({exc.__class__.__name__}); it was logged")

        self._pool.submit(run)
        return state


# -- what the pages call ---------------------------------------------------------------------


def _checks(request: Request) -> Checks:
    found: Checks = request.app.state.checks
    return found


async def settle(done: Callable[[], bool], seconds: float = SETTLE) -> None:
    """Wait up to ``seconds`` for ``done()`` (holding no thread: the event loop serves
    other pages meanwhile), so that a small file's page is shown without a progress step."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


Check = Callable[..., tuple[dict[str, Any], Sequence[Any]]]
"""The pages' check of an upload: (app, upload_id, principal, progress) -> (the check
page's context, the records read)."""
Summary = Callable[..., dict[str, Any]]
"""The pages' summary of an upload: (app, upload_id, principal, records or None: read the
file) -> the summary page's context."""


def _work(
    checks: Checks,
    app: Any,
    cache: Any,
    upload_id: str,
    meta: dict[str, Any],
    principal: Principal,
    check: Check,
    summary: Summary,
) -> Callable[[Callable[[int], None]], None]:
    """An upload's check (kept), then its summary started from the records read."""

    def work(progress: Callable[[int], None]) -> None:
        context, cases = check(app, upload_id, principal, progress)
        checks.checks.put(upload_key(upload_id, meta), context)
        if cache is not None:  # a new upload's rejects: kept once
            app.keep_rejects(cache, context["rejects"])
        checks.summary(
            upload_id, meta, functools.partial(summary, app, upload_id, principal, cases)
        )

    return work


def check_or_start(
    request: Request,
    app: Any,
    upload_id: str,
    principal: Principal,
    check: Check,
    summary: Summary,
) -> dict[str, Any] | CheckState:
    """The upload's kept check, or the state of its check in the pool (running, or failed),
    started now when none is kept here."""
    checks = _checks(request)
    state = checks.state(upload_id, principal)
    if state is not None and (state.status == "running" or state.removed):
        return state  # before the upload's files: a failed new upload is removed
    meta = study_routes.visible_upload(app, upload_id, principal)
    key = upload_key(upload_id, meta)
    if state is not None and state.status == "failed" and upload_key(upload_id, state.meta) == key:
        return state  # failed again with the same files (a new mapping is checked anew)
    found: dict[str, Any] | None = checks.checks.get(key)
    if found is not None:
        return found
    work = _work(checks, app, None, upload_id, meta, principal, check, summary)
    return checks.start(upload_id, meta, work, None)


def summary_or_start(
    request: Request, app: Any, upload_id: str, principal: Principal, summary: Summary
) -> dict[str, Any] | CheckState | Future[Any]:
    """The upload's kept summary; else its check while that runs (the summary follows it)
    or when it failed; else the summary's future in the pool (started now when none is
    under way: it reads the file)."""
    checks = _checks(request)
    state = checks.state(upload_id, principal)
    if state is not None and state.removed:
        return state
    meta = study_routes.visible_upload(app, upload_id, principal)
    found: dict[str, Any] | None = checks.summaries.get(upload_key(upload_id, meta))
    if found is not None:
        return found
    if state is not None and state.status == "running":
        return state
    return checks.summary(
        upload_id, meta, functools.partial(summary, app, upload_id, principal, None)
    )


def store(
    request: Request,
    app: Any,
    cache: Any,
    data: BinaryIO,
    suffix: str,
    named: Path | None,
    principal: Principal,
    mapping_text: bytes | None,
    check: Check,
    summary: Summary,
) -> str:
    """An upload stored as the API stores one, its check started in the pool (its check
    page shows the progress, then the check; a file the mapping does not fit fails the
    check, which the page shows, and nothing is kept). The upload's id."""
    settings = app.settings
    study_routes.expire_uploads(settings)
    upload_id = uuid.uuid4().hex
    folder = private_dir(settings.data_dir / "uploads") / upload_id
    folder.mkdir(mode=0o700)
    try:
        study = study_routes._save_upload(settings, data, folder, suffix)
        mapping = named
        if mapping_text is not None:
            mapping = write_private(folder / "mapping.yaml", mapping_text)
        meta = {
            "study_file": str(study),
            "mapping_file": str(mapping) if mapping else None,
            **owner_params(principal),
        }
        write_private(folder / "meta.json", orjson.dumps(meta))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    checks = _checks(request)
    work = _work(checks, app, cache, upload_id, meta, principal, check, summary)
    checks.start(upload_id, meta, work, lambda: shutil.rmtree(folder, ignore_errors=True))
    return upload_id
