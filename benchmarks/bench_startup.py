"""Start-up time of the ``fhir-cart`` process: ``--version`` and ``--help`` beside
``python -c pass`` (issue 24: both under 0.2 s).

``fhir-cart --help`` and ``pull --help`` are answered from typer's kept rendering after the
warm-up (``fhir_cart.cli.help_cache``, in a cache folder of this run); ``--help (typer)`` is
the same request with the cache off, rendered by typer each time (a first run, or other
conditions).

Each command runs as a whole process (the console script of this venv), alternating with
the baseline, ``--runs`` times after one warm-up (``--before SRC``: an older fhir_cart's
``--version`` and ``--help`` too, in the same rotation); min, median and max wall-clock seconds,
and the CPU seconds (user + system) of the process, which a loaded machine inflates less,
are printed and written to ``benchmarks/results/bench_startup.json`` with the load average
at start and end. Usage::

    .venv/bin/python benchmarks/bench_startup.py --runs 20
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_startup.json"


def _fhir_cart() -> list[str]:
    """The console script of this venv (what a user runs)."""
    return [str(Path(sys.executable).with_name("fhir-cart"))]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _seconds(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one run."""
    cpu, started = _cpu(), time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started, _cpu() - cpu


def _figures(times: list[float]) -> dict[str, float]:
    return {
        "min": round(min(times), 4),
        "median": round(statistics.median(times), 4),
        "max": round(max(times), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="the src/ folder of an older fhir_cart: its --version and --help (the same "
        "console script, that folder first on PYTHONPATH) alternate with this one's",
    )
    args = parser.parse_args()
    kept = tempfile.mkdtemp(prefix="bench-startup-")  # the help cache of this run only
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "fhir-cart --version": [*_fhir_cart(), "--version"],
        "fhir-cart --help": [*_fhir_cart(), "--help"],
        "fhir-cart --help (typer)": [*_fhir_cart(), "--help"],
        "fhir-cart pull --help": [*_fhir_cart(), "pull", "--help"],
    }
    own = {**os.environ, "XDG_CACHE_HOME": kept}
    envs: dict[str, dict[str, str] | None] = {name: own for name in commands}
    envs["fhir-cart --help (typer)"] = {**own, "FHIR_CART_HELP_CACHE": "off"}
    if args.before is not None:
        older = {**own, "PYTHONPATH": str(args.before.resolve())}
        for flag in ("--version", "--help"):
            commands[f"before: fhir-cart {flag}"] = [*_fhir_cart(), flag]
            envs[f"before: fhir-cart {flag}"] = older
    load_start = os.getloadavg()
    for name, argv in commands.items():  # warm the file cache (and the help's) once
        _seconds(argv, envs[name])
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, argv in commands.items():
            wall, used = _seconds(argv, envs[name])
            times[name].append(wall)
            cpu[name].append(used)
    load_end = os.getloadavg()
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "runs": args.runs,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "seconds": {name: _figures(t) for name, t in times.items()},
        "cpu_seconds": {name: _figures(t) for name, t in cpu.items()},
    }
    shutil.rmtree(kept, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"{args.runs} runs each, load {load_start[0]:.2f} -> {load_end[0]:.2f}")
    for name in commands:
        wall, used = _figures(times[name]), _figures(cpu[name])
        print(
            f"  {name:26} wall min {wall['min']:.3f} s  median {wall['median']:.3f} s  "
            f"max {wall['max']:.3f} s;  CPU median {used['median']:.3f} s"
        )
    print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
