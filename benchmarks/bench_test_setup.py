"""CPU of what unit tests do again and again (issue 21, the fast loop): a new service app
answering its first three requests, a new SQLite cache, and one ``fhir-cart map`` of the
seed study through ``main()``. CPU seconds (``time.process_time``) per operation, min,
median and max over ``--runs`` rounds, after one warm-up (what a test process pays once).

Run it with ``PYTHONPATH`` naming another checkout's ``src`` to measure that code the same
way (the figures in benchmarks/README.md compare two commits so)::

    .venv/bin/python benchmarks/bench_test_setup.py --runs 10 \
        --out benchmarks/results/bench_test_setup.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
KEY = "k" * 40


def _app_round() -> None:
    from fhir_cart.cache import open_cache
    from fhir_cart.service.app import create_app
    from fhir_cart.settings import Settings

    folder = Path(tempfile.mkdtemp(prefix="bench-app-"))
    url = f"sqlite:///{folder / 'cache.sqlite'}"
    settings = Settings(data_dir=folder / "data", cache_url=url, api_keys=[SecretStr(KEY)])
    app = create_app(settings, run_workers=False)
    app.state.cache = open_cache(url)

    async def ask() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for path in ("/jobs", "/ui/registries", "/ui/assistant"):
                answer = await client.get(path, headers={"X-API-Key": KEY})
                assert answer.status_code == 200, (path, answer.status_code)

    asyncio.run(ask())
    app.state.cache.close()


def _cache_round() -> None:
    from fhir_cart.cache import open_cache

    folder = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    open_cache(f"sqlite:///{folder / 'cache.sqlite'}").close()


def _map_round() -> None:
    from fhir_cart.cli import main

    seed = ROOT / "fixtures" / "seed"
    out = tempfile.mkdtemp(prefix="bench-map-")
    args = [
        "map",
        str(seed / "seed_cohort.xlsx"),
        "-m",
        str(ROOT / "mappings" / "centres" / "seed.yaml"),
    ]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main([*args, "-o", out]) == 0


def _cpu(operation: Callable[[], None], runs: int) -> dict[str, float]:
    operation()  # the warm-up: imports and what a process builds once
    seconds = []
    for _ in range(runs):
        start = time.process_time()
        operation()
        seconds.append(time.process_time() - start)
    return {
        "min": round(min(seconds), 4),
        "median": round(statistics.median(seconds), 4),
        "max": round(max(seconds), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path)
    options = parser.parse_args()
    import fhir_cart

    start_load = os.getloadavg()
    result = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "code": str(Path(fhir_cart.__file__).parents[1]),
        "runs": options.runs,
        "load_average_start": [round(x, 2) for x in start_load],
        "cpu_seconds": {
            "new app, first 3 requests (/jobs, /ui/registries, /ui/assistant)": _cpu(
                _app_round, options.runs
            ),
            "new SQLite cache": _cpu(_cache_round, options.runs),
            "fhir-cart map seed (main())": _cpu(_map_round, options.runs),
        },
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if options.out:
        options.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
