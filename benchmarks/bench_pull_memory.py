"""`fhir-cart pull`'s peak memory from 1,000 to 100,000 patients (issue 24: flat, under
300 MiB), against benchmarks/stub_fhir.py on 127.0.0.1 (copies of a 1,000-patient template
cohort made on the fly: a real test server cannot be loaded with 100,000 patients in a
session here).

    .venv/bin/python benchmarks/bench_pull_memory.py [--patients 1000 10000 30000 100000]
        [--out benchmarks/results/bench_pull_memory.json]

For each size, one run of ``fhir-cart pull --server URL --search identifier=SYSTEM| --out DIR
--cache fresh.sqlite --types library`` as a process: wall and CPU seconds (``os.wait4``),
peak RSS (VmHWM) and RSS every 2 s (VmRSS); the patients table is checked to hold every
patient. The stub shares the two cores with the pull, so the wall times say little; the
memory does not depend on them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_sync import FHIR_CART, PYTHON, load, machine, uptime  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(pid: int, field: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _pull(url: str, query: str, out: Path, cache: Path) -> dict[str, Any]:
    argv = [FHIR_CART, "pull", "--server", url, "--search", query, "--out", str(out)]
    argv += ["--cache", f"sqlite:///{cache}", "--types", "library"]
    err = out.parent / "pull.err"
    with err.open("wb") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        peak, trace, last = 0, [], 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _status(proc.pid, "VmHWM"))
            now = time.perf_counter() - started
            if now - last >= 2:
                trace.append([round(now, 1), round(_status(proc.pid, "VmRSS") / 1024, 1)])
                last = now
            time.sleep(0.05)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"fhir-cart pull exited {code}: {err.read_text()[-2000:]}")
    return {
        "wall_s": round(time.perf_counter() - started, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mib": round(peak / 1024, 1),
        "rss_mib_every_2_s": trace,
    }


def one_size(patients: int, template: Path, query: str, tmp: Path) -> dict[str, Any]:
    if patients % 1000:
        raise SystemExit("--patients: multiples of 1,000 (copies of the template)")
    port = _free_port()
    stub = subprocess.Popen(
        [PYTHON, str(HERE / "stub_fhir.py"), str(template), str(patients // 1000), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert stub.stdout is not None
        print(stub.stdout.readline().strip(), flush=True)  # ready
        out, cache = tmp / f"pulled-{patients}", tmp / f"cache-{patients}.sqlite"
        load_start = load()
        got = _pull(f"http://127.0.0.1:{port}/fhir", query, out, cache)
        got["load_average_start"], got["load_average_end"] = load_start, load()
        with (out / "patients.csv").open() as handle:
            rows = sum(1 for _ in handle) - 1
        if rows != patients:
            raise SystemExit(f"fhir-cart pulled {rows} patients, expected {patients}")
        with (out / "events.csv").open() as handle:
            got["event_rows"] = sum(1 for _ in handle) - 1
        shutil.rmtree(out)
        cache.unlink()
    finally:
        stub.terminate()
        stub.wait(30)
    return {"patients": patients, **got}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, nargs="+", default=[1000, 10000, 30000, 100000])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_pull_memory.json")
    args = parser.parse_args()
    from bench_sync import prepare
    from cohort import cohort

    from fhir_cart.writers import write_study

    started, sizes = uptime(), []
    with tempfile.TemporaryDirectory(prefix="bench-pull-memory-") as name:
        tmp = Path(name)
        write_study(cohort(1000), tmp / "study", "csv")
        _, template, query = prepare(tmp / "study", tmp)
        for patients in args.patients:
            sizes.append(one_size(patients, template, query, tmp))
            row = sizes[-1]
            print(
                f"{patients:,} patients: peak RSS {row['peak_rss_mib']} MiB, "
                f"{row['wall_s']} s wall, {row['cpu_s']} s CPU, load {row['load_average_start']}",
                flush=True,
            )
            result = {
                "command": ".venv/bin/python benchmarks/bench_pull_memory.py "
                + " ".join(sys.argv[1:]),
                "machine": machine(),
                "server": "benchmarks/stub_fhir.py on 127.0.0.1 (copies of a 1,000-patient "
                "template cohort), on the same 2 cores",
                "uptime_start": started,
                "uptime_end": uptime(),
                "sizes": sizes,
            }
            args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":
    main()
