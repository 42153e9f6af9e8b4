"""Server time of the workbench's pages for a 1,000-patient study (issue 22: under 200 ms).

    .venv/bin/python benchmarks/bench_pages.py [--patients 1000] [--runs 15] [--out FILE]

The service's app in this process (``create_app``, no job worker), a signed-in centre user
(and a registry manager for the registry page), over starlette's test client: each page is
asked for ``--runs`` times and the time from request to the whole answer is taken (wall
and this process's CPU time: the client's share is a few hundred microseconds). Every
upload is checked, and its summary worked out, in the background (issue 22): a page is
timed with no background work running (waited for, or held, before each request), so its
CPU time is its own. Pages:

- ``upload``: ``POST /ui/uploads`` of a centre B file of ``--patients`` rows (stored, its
  check started: a new upload each run);
- ``check``, ``summary``: an upload's check page and summary page as kept (every view
  after the background work);
- ``check, not kept here`` and ``summary, not kept here``: the pages of an upload that this
  process keeps nothing of (as a second worker, or after a restart): each starts the work
  in the pool and answers with its progress (the work held, so that only the page is timed:
  it waits up to ``checks.SETTLE`` for the work before it answers);
- ``progress``: the check's progress fragment that htmx asks for every second;
- ``home``, ``jobs-table``, ``job``: the uploads-and-jobs page, its job table, a job's page
  (50 finished jobs in the cache);
- ``registry``: a registry's page after a build of the two-centre test registry.

And the background work itself (not a page: no request waits for it): ``background`` is
the wall and process CPU time from the upload's POST to its check kept and to its summary
kept.

Results: benchmarks/results/bench_pages.json, min / median / max in ms per page, with the
machine and load averages before and after (the machine is shared: judge the noise by them).
Not a test: nothing here is timed by the suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from tests.support.big_study import centre_b_file  # noqa: E402
from tests.support.registry_net import REGISTRY_KEY, install_net  # noqa: E402

from fhir_cart.cache import open_cache  # noqa: E402
from fhir_cart.service.access import hash_password  # noqa: E402
from fhir_cart.service.app import create_app  # noqa: E402
from fhir_cart.service.jobs import run_worker  # noqa: E402
from fhir_cart.service.web import checks  # noqa: E402
from fhir_cart.settings import Settings, UserSettings  # noqa: E402

PASSWORD = "a long synthetic password"


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found is not None
    return found.group(1)


def _sign_in(client: TestClient, user: str) -> str:
    form = client.get("/ui/login")
    client.post("/ui/login", data={"csrf": _csrf(form.text), "user": user, "password": PASSWORD})
    return _csrf(client.get("/ui/").text)


def _timed(ask: Callable[[], Any], runs: int, before: Callable[[], None] | None = None) -> Any:
    wall, cpu = [], []
    for _ in range(runs):
        if before is not None:
            before()
        w, c = time.perf_counter(), time.process_time()
        answer = ask()
        wall.append((time.perf_counter() - w) * 1000)
        cpu.append((time.process_time() - c) * 1000)
        assert answer.status_code in (200, 303), answer.text[:500]
    return {
        "wall_ms": [round(min(wall), 1), round(statistics.median(wall), 1), round(max(wall), 1)],
        "cpu_ms": [round(min(cpu), 1), round(statistics.median(cpu), 1), round(max(cpu), 1)],
    }


def _settings(folder: Path) -> Settings:
    hashed = SecretStr(hash_password(PASSWORD))
    return Settings(
        data_dir=folder / "data",
        cache_url=f"sqlite:///{folder / 'cache.sqlite'}",
        registry_key=SecretStr(REGISTRY_KEY),
        users=[
            UserSettings(name="ana", role="centre", centre="centre_b", password_hash=hashed),
            UserSettings(name="rui", role="registry", password_hash=hashed),
        ],
    )


def _idle(app: Any) -> None:
    """Until the app's checks and summaries in the pool have ended."""
    kept = app.state.checks
    while any(not s.finished for s in list(kept._states.values())) or any(
        not f.done() for f in list(kept._summarising.values())
    ):
        time.sleep(0.005)


class _Released(Exception):
    """The held work's end: it fails at once rather than spend CPU after the timing."""


@contextmanager
def _held(application: Any, name: str) -> Iterator[None]:
    """``application.<name>`` held until the block ends, then failed: a page that starts
    the work is timed without the work's CPU."""
    original = getattr(application, name)
    release = threading.Event()

    def held(*args: Any, **options: Any) -> Any:
        release.wait(600)
        raise _Released

    setattr(application, name, held)
    try:
        yield
    finally:
        release.set()
        setattr(application, name, original)


def measure(patients: int, runs: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-pages-"))
    settings = _settings(folder)
    install_net(settings.data_dir)
    study = centre_b_file(patients, folder / "study.csv")
    app = create_app(settings, run_workers=False)
    app.state.cache = open_cache(settings.effective_cache_url())
    cache = app.state.cache
    application = app.state.application
    for n in range(50):
        owner = {"owner_role": "centre", "owner_centre": "centre_b"}
        run = cache.create_run(kind="push", server="x", status="pending", params=owner)
        cache.finish_run(run, status="succeeded", counts={"created": n})
    results: dict[str, Any] = {}
    with TestClient(app, follow_redirects=False) as client:
        csrf = _sign_in(client, "ana")
        body = study.read_bytes()
        made: list[str] = []

        def upload() -> Any:
            answer = client.post(
                "/ui/uploads",
                data={"csrf": csrf, "mapping": "centre_b"},
                files={"file": ("study.csv", body)},
            )
            made.append(answer.headers["location"].rsplit("/", 1)[1])
            return answer

        results["upload"] = _timed(upload, runs, lambda: _idle(app))
        _idle(app)
        upload_id = made[-1]
        results["background"] = _background(app, client, upload, runs)
        for page, path in (
            ("check", f"/ui/uploads/{upload_id}"),
            ("summary", f"/ui/uploads/{upload_id}/summary"),
        ):
            results[page] = _timed(lambda p=path: client.get(p), runs)  # type: ignore[misc]

        def forget() -> None:  # as a second worker, or a restart: nothing kept here
            app.state.checks.close()
            app.state.checks = checks.Checks()

        with _held(application, "read_study"):  # the work started by the page waits
            check_page = f"/ui/uploads/{upload_id}"
            results["check, not kept here"] = _timed(lambda: client.get(check_page), runs, forget)
            results["progress"] = _timed(
                lambda: client.get(f"/ui/uploads/{upload_id}/progress"), runs
            )
            summary_page = f"/ui/uploads/{upload_id}/summary"
            results["summary, not kept here"] = _timed(
                lambda: client.get(summary_page), runs, forget
            )
        _idle(app)
        job = cache.list_runs(limit=1)[0].id
        for page, path in (
            ("home", "/ui/"),
            ("jobs-table", "/ui/jobs-table"),
            ("job", f"/ui/jobs/{job}"),
        ):
            results[page] = _timed(lambda p=path: client.get(p), runs)  # type: ignore[misc]
    with TestClient(app, follow_redirects=False) as client:
        csrf = _sign_in(client, "rui")
        client.post("/ui/registries/net/build", data={"csrf": csrf})
        asyncio.run(run_worker(app.state.application, cache, until_empty=True))
        results["registry"] = _timed(lambda: client.get("/ui/registries/net"), runs)
        results["registries"] = _timed(lambda: client.get("/ui/registries"), runs)
    cache.close()
    return results


def _background(app: Any, client: TestClient, upload: Callable[[], Any], runs: int) -> Any:
    """From an upload's POST to its check kept, and to its summary kept (wall and CPU of
    the process), over ``min(runs, 5)`` uploads."""
    figures: dict[str, list[float]] = {k: [] for k in ("check", "summary")}
    cpu: dict[str, list[float]] = {k: [] for k in ("check", "summary")}
    for _ in range(min(runs, 5)):
        _idle(app)
        w, c = time.perf_counter(), time.process_time()
        upload_id = upload().headers["location"].rsplit("/", 1)[1]
        kept = app.state.checks
        for kind, store in (("check", kept.checks), ("summary", kept.summaries)):
            while not any(key[0] == upload_id for key in list(store._held)):
                time.sleep(0.005)
            figures[kind].append((time.perf_counter() - w) * 1000)
            cpu[kind].append((time.process_time() - c) * 1000)
    return {
        f"{kind} kept": {
            "wall_ms": [round(f(figures[kind]), 1) for f in (min, statistics.median, max)],
            "cpu_ms": [round(f(cpu[kind]), 1) for f in (min, statistics.median, max)],
        }
        for kind in ("check", "summary")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/bench_pages.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    pages = measure(args.patients, args.runs)
    report = {
        "patients": args.patients,
        "runs": args.runs,
        "pages": pages,
        "target_ms": 200,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    shown = {k: v for k, v in pages.items() if k != "background"}
    shown |= {f"background: {k}": v for k, v in pages["background"].items()}
    for page, figures in shown.items():
        wall, cpu = figures["wall_ms"], figures["cpu_ms"]
        print(
            f"{page:28} wall {wall[0]:8.1f} {wall[1]:8.1f} {wall[2]:8.1f} ms   "
            f"cpu {cpu[0]:8.1f} {cpu[1]:8.1f} {cpu[2]:8.1f} ms"
        )
    print(f"load {report['load_before']} -> {report['load_after']}")


if __name__ == "__main__":
    main()
