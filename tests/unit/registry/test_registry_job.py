"""`registry build` as a service job: queued as a run, claimed by a worker, recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from fhir_cart.settings import Settings


async def test_a_worker_runs_a_queued_registry_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_cart.application import Application, BuildRequest
    from fhir_cart.cache import open_cache
    from fhir_cart.registry.build import BuildResult
    from fhir_cart.service.jobs import run_worker

    calls: list[dict[str, Any]] = []

    def fake_build(app: Application, request: BuildRequest) -> tuple[BuildResult, None]:
        calls.append({"request": request, "settings": app.settings})
        assert request.progress is not None
        request.progress("read", 1, 3)
        return BuildResult(out=request.out, skipped=True), None

    monkeypatch.setattr(Application, "registry_build", fake_build)
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    settings = Settings(data_dir=tmp_path, registry_key=SecretStr("k" * 40))
    cache = open_cache(f"sqlite:///{tmp_path / 'cache.sqlite'}")
    try:
        run_id = cache.create_run(
            kind="registry", server="", params={"registry_file": "r.yaml"}, status="pending"
        )
        assert await run_worker(settings, cache, until_empty=True) == 1
        run = cache.get_run(run_id)
        assert run is not None
        assert run.status == "succeeded"
        assert (run.progress_done, run.progress_total) == (1, 3)
        assert orjson.loads(run.counts) == {}
    finally:
        cache.close()
    assert calls[0]["request"].registry_file == Path("r.yaml")
    assert calls[0]["request"].out == tmp_path / "jobs" / str(run_id)
    assert calls[0]["settings"] is settings  # the worker's own settings
