"""The service's routes are built once per process and shared by every app made in it
(FastAPI builds an included route's parameters and validators on its first request, once
per inclusion: each test's new app paid it again). Each app still answers from its own
application: a route finds it in ``request.app``."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from pydantic import SecretStr

from fhir_cart.service.app import create_app
from fhir_cart.settings import Settings

KEY = "admin-key-0123456789abcdef0123456789"
GOOD = b"centre: kh-nord\npatients:\n  columns: {study_id: Pat-Nr}\n"


def _settings(folder: Path) -> Settings:
    return Settings(
        data_dir=folder / "data",
        cache_url=f"sqlite:///{folder / 'cache.sqlite'}",
        api_keys=[SecretStr(KEY)],
    )


def test_two_apps_share_their_routes_and_each_answers_from_its_own_data(
    tmp_path: Path,
) -> None:
    one = create_app(_settings(tmp_path / "one"), run_workers=False)
    two = create_app(_settings(tmp_path / "two"), run_workers=False)
    shared = [route for route in one.router.routes if route in two.router.routes]
    assert len(shared) >= 5  # the API's routers and the pages', as included once
    headers = {"X-API-Key": KEY}
    with TestClient(one) as first, TestClient(two) as second:
        answer = first.post("/mappings/kohorte", headers=headers, files={"file": ("m", GOOD)})
        assert answer.status_code == 201, answer.text
        assert [m["name"] for m in first.get("/mappings", headers=headers).json()] == ["kohorte"]
        assert second.get("/mappings", headers=headers).json() == []
        assert second.get("/mappings/kohorte", headers=headers).status_code == 404
