"""The web service under load: 30 clients for 60 s, a mix of status reads, uploads,
previews and push jobs, on a SQLite and on a PostgreSQL cache.

    .venv/bin/python benchmarks/bench_load.py [--clients 30] [--seconds 60]
        [--databases sqlite,postgresql] [--postgres URL] [--separate-worker] [--out FILE]

Each database gets a fresh service: ``fhir-cart serve`` (API and its one job worker, as
shipped; with ``--separate-worker``, ``serve --no-workers`` beside one ``fhir-cart worker``
process, so jobs do not share the API's interpreter) in a process of its own on 127.0.0.1,
with a fresh data folder, pushing to a fresh sekmet-fhir server (fhir_cart.devservers), and
for PostgreSQL a fresh schema that is dropped afterwards. The load generator is another
process on the same machine (this file run with ``_load``): ``--clients`` asyncio tasks
over one httpx client, each looping for ``--seconds`` over a weighted draw of

- ``GET /jobs/{id}`` (status of a job it queued; 40 %) and ``GET /jobs`` (10 %),
- ``POST /uploads`` (centre_b.csv, 10 patients; 15 %),
- ``GET /uploads/{id}/preview`` (of an upload it made; 20 %),
- ``POST /jobs/push`` (of an upload it made, to the sekmet server; 15 %),

each request timed from send to the end of the answer. Before the clock starts every client
makes one upload and one push, untimed, so every route has something to read. Per route:
requests, requests/s, errors (any status >= 400 or a transport error), p50, p90, p99 and max
latency. Jobs still pending at the end are counted (the worker's backlog).

Results: benchmarks/results/bench_load.json, with the machine (CPU model, cores, Python) and
the load averages before and after each run: the machine is shared, judge the noise by them.
Not a test: nothing here is timed by the suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "fixtures" / "centre_b" / "centre_b.csv"
RESULTS = ROOT / "benchmarks" / "results" / "bench_load.json"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MIX = (("status", 40), ("list", 10), ("upload", 15), ("preview", 20), ("push", 15))


# -- the load generator (a process of its own) ----------------------------------------------


class Client:
    def __init__(
        self,
        http: httpx.AsyncClient,
        key: str,
        record: dict[str, list[float]],
        errors: dict[str, int],
    ) -> None:
        self.http, self.key, self.record, self.errors = http, key, record, errors
        self.uploads: list[str] = []
        self.jobs: list[int] = []

    async def call(self, route: str, method: str, path: str, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            answer = await self.http.request(
                method, path, headers={"X-API-Key": self.key}, **kwargs
            )
        except httpx.HTTPError:
            self.errors[route] = self.errors.get(route, 0) + 1
            return None
        self.record.setdefault(route, []).append(time.perf_counter() - started)
        if answer.status_code >= 400:
            self.errors[route] = self.errors.get(route, 0) + 1
            return None
        return answer.json()

    async def upload(self) -> None:
        files = {"file": ("centre_b.csv", STUDY.read_bytes(), "text/csv")}
        body = await self.call(
            "upload", "POST", "/uploads", data={"mapping": "centre_b"}, files=files
        )
        if body:
            self.uploads.append(body["upload_id"])

    async def push(self) -> None:
        if self.uploads:
            body = {"upload_id": random.choice(self.uploads), "server": "sekmet"}
            job = await self.call("push", "POST", "/jobs/push", json=body)
            if job:
                self.jobs.append(job["id"])

    async def step(self, route: str) -> None:
        if route == "status" and self.jobs:
            await self.call(route, "GET", f"/jobs/{random.choice(self.jobs)}")
        elif route == "list":
            await self.call(route, "GET", "/jobs", params={"limit": 20})
        elif route == "upload":
            await self.upload()
        elif route == "preview" and self.uploads:
            await self.call(route, "GET", f"/uploads/{random.choice(self.uploads)}/preview")
        elif route == "push":
            await self.push()


async def _load(url: str, key: str, clients: int, seconds: float) -> dict[str, Any]:
    record: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    routes, weights = zip(*MIX, strict=True)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        pool = [Client(http, key, record, errors) for _ in range(clients)]
        for client in pool:  # untimed: something for every route to read
            await client.upload()
            await client.push()
        record.clear()
        errors.clear()
        end = time.monotonic() + seconds

        async def run(client: Client) -> None:
            while time.monotonic() < end:
                await client.step(random.choices(routes, weights)[0])

        started = time.monotonic()
        await asyncio.gather(*(run(c) for c in pool))
        elapsed = time.monotonic() - started
        jobs: list[dict[str, Any]] = []
        while page := (
            await http.get(
                "/jobs", params={"limit": 500, "offset": len(jobs)}, headers={"X-API-Key": key}
            )
        ).json():
            jobs += page
    return {
        "elapsed_s": round(elapsed, 2),
        "record": record,
        "errors": errors,
        "jobs_pending_at_end": sum(j["status"] == "pending" for j in jobs),
        "jobs_running_at_end": sum(j["status"] == "running" for j in jobs),
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    elapsed = raw["elapsed_s"]
    routes = {}
    for route, _ in MIX:
        times = raw["record"].get(route, [])
        ms = [t * 1000 for t in times]
        routes[route] = {
            "requests": len(times),
            "per_s": round(len(times) / elapsed, 1),
            "errors": raw["errors"].get(route, 0),
            **(
                {
                    "p50_ms": round(statistics.median(ms), 1),
                    "p90_ms": round(_percentile(ms, 0.9), 1),
                    "p99_ms": round(_percentile(ms, 0.99), 1),
                    "max_ms": round(max(ms), 1),
                }
                if ms
                else {}
            ),
        }
    every = [t * 1000 for times in raw["record"].values() for t in times]
    total = {
        "requests": len(every),
        "per_s": round(len(every) / elapsed, 1),
        "errors": sum(raw["errors"].values()),
        "p50_ms": round(statistics.median(every), 1),
        "p99_ms": round(_percentile(every, 0.99), 1),
    }
    return {
        "elapsed_s": elapsed,
        "routes": routes,
        "all": total,
        "jobs_pending_at_end": raw["jobs_pending_at_end"],
        "jobs_running_at_end": raw["jobs_running_at_end"],
    }


# -- one service, one database --------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _fresh_schema(url: str) -> tuple[str, str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}", schema


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(
        url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    ) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited ({process.returncode})")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the service did not start")


def run_one(database: str, args: argparse.Namespace, fhir_url: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    key = secrets.token_urlsafe(32)
    schema = None
    cache_url = f"sqlite:///{work / 'cache.sqlite'}"
    if database == "postgresql":
        cache_url, schema = _fresh_schema(args.postgres)
    port = _free_port()
    env = {
        **os.environ,
        "FHIR_CART_DATA_DIR": str(work / "data"),
        "FHIR_CART_CACHE_URL": cache_url,
        "FHIR_CART_API_KEYS": orjson.dumps([key]).decode(),
        "FHIR_CART_SERVERS__SEKMET__BASE_URL": fhir_url,
        "FHIR_CART_CONFIG": str(work / "none.yaml"),
    }
    cli = str(Path(sys.executable).with_name("fhir-cart"))
    serve = [cli, "serve", "--port", str(port), *(["--no-workers"] if args.separate_worker else [])]
    service = subprocess.Popen(
        serve, env=env, stdout=subprocess.DEVNULL, stderr=(work / "service.log").open("wb")
    )
    worker = None
    if args.separate_worker:
        worker = subprocess.Popen(
            [cli, "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(work / "worker.log").open("wb"),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, service)
        before = os.getloadavg()
        load = subprocess.run(
            [sys.executable, __file__, "_load", url, key, str(args.clients), str(args.seconds)],
            check=True,
            capture_output=True,
        )
        after = os.getloadavg()
        raw = orjson.loads(load.stdout)
    finally:
        for process in (service, worker):
            if process is None:
                continue
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        if schema is not None:
            _drop_schema(args.postgres, schema)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "database": database,
        "worker": "process" if args.separate_worker else "thread",
        "load_before": before,
        "load_after": after,
        **summarise(raw),
    }


def _machine() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_load":
        url, key, clients, seconds = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
        sys.stdout.buffer.write(orjson.dumps(asyncio.run(_load(url, key, clients, seconds))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--postgres", default=os.environ.get("FHIR_CART_TEST_POSTGRES", POSTGRES))
    parser.add_argument(
        "--separate-worker",
        action="store_true",
        help="serve --no-workers plus one `fhir-cart worker` process",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from fhir_cart.devservers import SekmetServer

    runs = []
    for database in args.databases.split(","):
        with SekmetServer() as fhir:
            result = run_one(database, args, fhir.base_url)
        runs.append(result)
        status = result["routes"]["status"]
        every = result["all"]
        print(
            f"{database} ({result['worker']}): {every['per_s']} requests/s, p50 "
            f"{every['p50_ms']} ms, p99 {every['p99_ms']} ms, {every['errors']} errors; status "
            f"reads p99 {status.get('p99_ms')} ms; pending at end "
            f"{result['jobs_pending_at_end']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(
        orjson.dumps(
            {
                "clients": args.clients,
                "seconds": args.seconds,
                "mix_percent": dict(MIX),
                "machine": _machine(),
                "runs": runs,
            },
            option=orjson.OPT_INDENT_2,
        )
        + b"\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
