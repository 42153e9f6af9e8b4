"""Checking uploads for the pages: large files in the background with progress, and each
upload's evaluated check and summary kept, so a page shown again is not worked out again.

- An upload the page receives over :data:`BACKGROUND_BYTES` is stored at once and checked
  by a thread pool (never the event loop: every other page keeps answering); its check page
  shows a progress bar (patients read of the file's rows) that htmx refreshes until the
  check is done, then the check itself.
- The check of an upload (rejects, the grid, the records, one patient's FHIR) and its
  summary (measures, plots) are kept in memory per upload, keyed by the upload's files'
  times: an upload never changes, so they are worked out once per process (a second worker
  works them out once as well). At most :data:`KEPT` of each are held.

Progress lives in this process: a check started here is followed here (a second worker
that is asked for a check it did not start works the check out itself).
"""

from __future__ import annotations

import csv
import functools
import logging
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from fastapi import HTTPException, Request

from fhir_cart.errors import FhirCartError, InputError
from fhir_cart.private import private_dir, write_private
from fhir_cart.service.access import Principal, can_see_upload, owner_params
from fhir_cart.service.deps import unprocessable
from fhir_cart.service.routers import study as study_routes

__all__ = ["BACKGROUND_BYTES", "KEPT", "CheckState", "Checks", "count_rows", "kept", "upload_key"]

log = logging.getLogger(__name__)

BACKGROUND_BYTES = 512 * 1024
"""A study file larger than this is checked in the background (about 2,000 rows of a
wide CSV); smaller ones are checked before the page answers."""
KEPT = 32


@dataclass
class CheckState:
    """A background check: ``running`` until it is ``done`` or ``failed``."""

    meta: dict[str, Any]
    total: int
    done: int = 0
    status: str = "running"
    error: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

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

    def prepare_summary(
        self, upload_id: str, meta: dict[str, Any], work: Callable[[], Any]
    ) -> None:
        """The upload's summary (``work``) worked out in the pool now, so that its page is
        ready when asked for (a failure is the page's to show when it is asked for)."""

        def run() -> None:
            try:
                kept(self.summaries, upload_id, meta, work)
            except Exception as exc:
                log.info("summary not prepared: %s", exc.__class__.__name__)

        self._pool.submit(run)

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
        on_failure: Callable[[], None],
    ) -> CheckState:
        """Run ``work(progress)`` in the pool: it reads the upload, calling ``progress(n)``
        per patient, and keeps its check. A FhirCartError fails the check with its message
        (and rejects), ``on_failure`` then runs (the upload is removed, as a refused
        upload leaves nothing)."""
        state = CheckState(meta, count_rows(Path(meta["study_file"])))
        with self._lock:
            if len(self._states) > 200:  # ended checks are forgotten after a while
                for key in [k for k, v in self._states.items() if v.finished][:100]:
                    del self._states[key]
            self._states[upload_id] = state

        def progress(n: int) -> None:
            state.done = n

        def run() -> None:
            try:
                work(progress)
                state.status = "done"
            except FhirCartError as exc:
                state.error = str(exc)
                if isinstance(exc, InputError):
                    state.errors = [r.as_dict() for r in exc.rejects[: InputError.shown]]
                state.status = "failed"
                on_failure()
            except Exception as exc:  # the check's failure is the page's to show
                log.warning("background check failed: %s", exc.__class__.__name__)
                state.error = f"the check failed ({exc.__class__.__name__}); it was logged"
                state.status = "failed"
                on_failure()

        self._pool.submit(run)
        return state


# -- what the pages call ---------------------------------------------------------------------


def _checks(request: Request) -> Checks:
    found: Checks = request.app.state.checks
    return found


def page_state(request: Request, upload_id: str, principal: Principal) -> CheckState | None:
    """The upload's background check while it runs, or when it failed (None: none here,
    or done: the check page shows the check)."""
    state = _checks(request).state(upload_id, principal)
    return None if state is None or state.status == "done" else state


Work = Callable[..., dict[str, Any]]
"""The pages' check or summary of an upload: (app, upload_id, principal[, progress])."""


def kept_check(
    request: Request, app: Any, upload_id: str, principal: Principal, check: Work
) -> Any:
    meta = study_routes.visible_upload(app, upload_id, principal)
    work = functools.partial(check, app, upload_id, principal)
    return kept(_checks(request).checks, upload_id, meta, work)


def kept_summary(
    request: Request, app: Any, upload_id: str, principal: Principal, summary: Work
) -> Any:
    meta = study_routes.visible_upload(app, upload_id, principal)
    work = functools.partial(summary, app, upload_id, principal)
    return kept(_checks(request).summaries, upload_id, meta, work)


def store(
    request: Request,
    app: Any,
    cache: Any,
    data: BinaryIO,
    suffix: str,
    named: Path | None,
    principal: Principal,
    mapping_text: bytes | None,
    background: bool,
    check: Work,
    summary: Work,
) -> str:
    """An upload stored as the API stores one and checked once, its check kept for its
    page: in the background (its check page shows the progress), or now (a file the
    mapping does not fit is a 422 with its rejects, and nothing is kept). The upload's id."""
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

    def work(progress: Callable[[int], None]) -> None:
        context = check(app, upload_id, principal, progress)
        checks.checks.put(upload_key(upload_id, meta), context)
        app.keep_rejects(cache, context["rejects"])
        summarise = functools.partial(summary, app, upload_id, principal)
        checks.prepare_summary(upload_id, meta, summarise)

    if background:
        checks.start(upload_id, meta, work, lambda: shutil.rmtree(folder, ignore_errors=True))
        return upload_id
    try:
        work(lambda _: None)
    except FhirCartError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise unprocessable(exc) from exc
    except csv.Error as exc:  # e.g. a field over the csv module's 131,072 characters
        shutil.rmtree(folder, ignore_errors=True)
        raise HTTPException(422, f"the CSV file cannot be read: {exc}") from exc
    return upload_id
