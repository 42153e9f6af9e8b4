"""Server time of the workbench's pages for a 1,000-patient study (issue 22: under 200 ms).

    .venv/bin/python benchmarks/bench_pages.py [--patients 1000] [--runs 15] [--out FILE]

The service's app in this process (``create_app``, no job worker), a signed-in centre user
(and a registry manager for the registry page), over starlette's test client: each page is
asked for ``--runs`` times and the time from request to the whole answer is taken (wall
and this process's CPU time: the client's share is a few hundred microseconds). Pages:

- ``upload``: ``POST /ui/uploads`` of a centre B file of ``--patients`` rows (the file
  read and checked: a new upload each run);
- ``check`` and ``summary``: an upload's check page and its summary (measures and plots),
  ``cold`` (kept checks forgotten before each run: worked out again) and ``warm`` (as a
  page is shown again: kept per upload since issue 22);
- ``home``, ``jobs-table``, ``job``: the uploads-and-jobs page, its job table, a job's page
  (50 finished jobs in the cache);
- ``registry``: a registry's page after a build of the two-centre test registry.

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
import time
from collections.abc import Callable
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


def measure(patients: int, runs: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-pages-"))
    settings = _settings(folder)
    install_net(settings.data_dir)
    study = centre_b_file(patients, folder / "study.csv")
    app = create_app(settings, run_workers=False)
    app.state.cache = open_cache(settings.effective_cache_url())
    cache = app.state.cache
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

        results["upload"] = _timed(upload, runs)
        upload_id = made[-1]

        def forget() -> None:
            app.state.checks.checks = checks._Kept()
            app.state.checks.summaries = checks._Kept()

        for page, path in (
            ("check", f"/ui/uploads/{upload_id}"),
            ("summary", f"/ui/uploads/{upload_id}/summary"),
        ):
            results[f"{page} (cold)"] = _timed(lambda p=path: client.get(p), runs, forget)  # type: ignore[misc]
            results[f"{page} (warm)"] = _timed(lambda p=path: client.get(p), runs)  # type: ignore[misc]
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
    for page, figures in pages.items():
        wall, cpu = figures["wall_ms"], figures["cpu_ms"]
        print(
            f"{page:18} wall {wall[0]:8.1f} {wall[1]:8.1f} {wall[2]:8.1f} ms   "
            f"cpu {cpu[0]:8.1f} {cpu[1]:8.1f} {cpu[2]:8.1f} ms"
        )
    print(f"load {report['load_before']} -> {report['load_after']}")


if __name__ == "__main__":
    main()
