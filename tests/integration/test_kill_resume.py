"""A push killed with SIGKILL part-way, then run again: everything arrives exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fhir_cart.cache import open_cache
from fhir_cart.cli import main
from fhir_cart.mappers.context import MappingContext
from fhir_cart.records import Case
from fhir_cart.writers import write_study
from tests.integration.test_sync import expected_totals, server_totals

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _cohort(seed_cases: list[Case], copies: int) -> list[Case]:
    out = []
    for n in range(copies):
        for case in seed_cases:
            patient = case.patient.model_copy(update={"study_id": f"{case.patient.study_id}-{n}"})
            out.append(case.model_copy(update={"patient": patient}))
    return out


def _progress(cache_url: str) -> int:
    cache = open_cache(cache_url, migrate=False)
    try:
        runs = cache.list_runs()
        return runs[0].progress_done if runs else 0
    except Exception:  # the database may not exist yet
        return 0
    finally:
        cache.close()


def test_sigkill_mid_push_then_rerun_leaves_one_copy_of_each(
    fhir_server: str, tmp_path: Path, ctx: MappingContext, seed_cases: list[Case]
) -> None:
    cohort = _cohort(seed_cases, 40)  # 280 patients, 4,200 resources, 42 bundles
    (study,) = write_study(cohort, tmp_path, "json")
    cache_url = f"sqlite:///{tmp_path / 'cache.sqlite'}"
    code = "import sys; from fhir_cart.cli import main; sys.exit(main(sys.argv[1:]))"
    args = [
        sys.executable,
        "-c",
        code,
        "push",
        str(study),
        "--server",
        fhir_server,
        "--cache",
        cache_url,
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _progress(cache_url) < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "push finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    expected = expected_totals(ctx, cohort)
    partial = server_totals(fhir_server)
    assert 0 < sum(partial.values()) < sum(expected.values())
    assert main(["push", str(study), "--server", fhir_server, "--cache", cache_url]) == 0
    assert server_totals(fhir_server) == expected
    identifiers = httpx.get(f"{fhir_server}/Patient", params={"_count": "1000"}).json()
    values = [e["resource"]["identifier"][0]["value"] for e in identifiers["entry"]]
    assert len(values) == len(set(values)) == len(cohort)
    cache = open_cache(cache_url)
    assert cache.pending() == []
    statuses = [r.status for r in reversed(cache.list_runs())]
    assert statuses == ["interrupted", "succeeded"]  # found dead by the re-run
    cache.close()
