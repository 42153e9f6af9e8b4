"""Scopes (issue 22): every pair of roles over every route that names an upload or a job,
through the API and the pages alike. A centre sees only what it started; the registry
only registry builds; admins (``api_keys`` as before, or admin users) everything. What is
out of scope answers 404 (as if it did not exist), what a role may never do 403."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fhir_cart.cache import open_cache
from fhir_cart.service.app import create_app
from fhir_cart.settings import ServerSettings, Settings, UserSettings
from tests.conftest import CENTRE_B_FILE

KEYS = {
    "admin": "admin-key-0123456789abcdef0123456789",
    "centre_a": "centre-a-key-0123456789abcdef012345",
    "centre_b": "centre-b-key-0123456789abcdef012345",
    "registry": "registry-key-0123456789abcdef01234",
}
ROLES = tuple(KEYS)


def headers(role: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[role]}


def scoped_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        cache_url=f"sqlite:///{tmp_path / 'cache.sqlite'}",
        api_keys=[SecretStr(KEYS["admin"])],
        users=[
            UserSettings(
                name="a", role="centre", centre="centre_a", api_key=SecretStr(KEYS["centre_a"])
            ),
            UserSettings(
                name="b", role="centre", centre="centre_b", api_key=SecretStr(KEYS["centre_b"])
            ),
            UserSettings(name="reg", role="registry", api_key=SecretStr(KEYS["registry"])),
        ],
        servers={"local": ServerSettings(base_url="http://127.0.0.1:9/fhir")},
    )


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    tmp_path = tmp_path_factory.mktemp("scopes")
    application = create_app(scoped_settings(tmp_path), run_workers=False)
    (tmp_path / "data" / "registries").mkdir(parents=True)
    (tmp_path / "data" / "registries" / "net.yaml").write_text("id: net\n")
    application.state.cache = open_cache(f"sqlite:///{tmp_path / 'cache.sqlite'}")
    yield application
    application.state.cache.close()


def upload(client: TestClient, role: str) -> Any:
    with CENTRE_B_FILE.open("rb") as handle:
        return client.post(
            "/uploads",
            headers=headers(role),
            data={"mapping": "centre_b"},
            files={"file": ("centre_b.csv", handle)},
        )


@pytest.fixture(scope="module")
def world(app: FastAPI) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    """One upload and one push job per centre, a pull by centre_b, a registry build."""
    with TestClient(app) as client:
        made: dict[str, Any] = {}
        for centre in ("centre_a", "centre_b"):
            answer = upload(client, centre)
            assert answer.status_code == 201, answer.text
            made[f"upload_{centre}"] = answer.json()["upload_id"]
            body = {"upload_id": made[f"upload_{centre}"], "server": "local"}
            push = client.post("/jobs/push", headers=headers(centre), json=body)
            assert push.status_code == 202, push.text
            made[f"push_{centre}"] = push.json()["id"]
        search = {"server": "local", "selection": "search", "query": "_id=x"}
        pull = client.post("/jobs/pull", headers=headers("centre_b"), json=search)
        assert pull.status_code == 202, pull.text
        made["pull_centre_b"] = pull.json()["id"]
        build = client.post("/jobs/registry", headers=headers("registry"), json={"registry": "net"})
        assert build.status_code == 202, build.text
        made["registry"] = build.json()["id"]
        yield client, made


SEES_JOB = {
    "push_centre_a": {"admin", "centre_a"},
    "push_centre_b": {"admin", "centre_b"},
    "pull_centre_b": {"admin", "centre_b"},
    "registry": {"admin", "registry"},
}
JOB_ROUTES = [
    ("GET", "/jobs/{id}"),
    ("GET", "/jobs/{id}/outcomes"),
    ("GET", "/jobs/{id}/failures"),
    ("POST", "/jobs/{id}/resume"),
    ("GET", "/jobs/{id}/summary"),
    ("GET", "/jobs/{id}/export"),
    ("GET", "/ui/jobs/{id}"),
    ("GET", "/ui/jobs/{id}/export"),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("job", sorted(SEES_JOB))
@pytest.mark.parametrize(("method", "route"), JOB_ROUTES)
def test_a_job_is_seen_only_within_its_scope(
    world: tuple[TestClient, dict[str, Any]], role: str, job: str, method: str, route: str
) -> None:
    client, made = world
    answer = client.request(method, route.format(id=made[job]), headers=headers(role))
    if role in SEES_JOB[job]:
        assert answer.status_code != 404, answer.text  # 200, or 409 (not a pull, pending)
    else:  # the same answer as for a job that does not exist
        assert answer.status_code == 404, answer.text
        none = client.request(method, route.format(id=999_999), headers=headers(role))
        assert (none.status_code, none.headers["content-type"]) == (
            404,
            answer.headers["content-type"],
        )
        if not route.startswith("/ui/"):
            assert answer.json() == none.json()


OUT_OF_SCOPE = [(r, j) for j, seen in sorted(SEES_JOB.items()) for r in ROLES if r not in seen]


@pytest.mark.parametrize(("role", "job"), OUT_OF_SCOPE)
def test_job_events_are_not_streamed_outside_the_scope(
    world: tuple[TestClient, dict[str, Any]], role: str, job: str
) -> None:
    """(A job in scope streams until it ends: tests/unit/service/test_workbench_pages.py.)"""
    client, made = world
    answer = client.get(f"/ui/jobs/{made[job]}/events", headers=headers(role))
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("role", ROLES)
def test_the_job_list_holds_only_the_jobs_in_scope(
    world: tuple[TestClient, dict[str, Any]], role: str
) -> None:
    client, made = world
    everything = client.get("/jobs", headers=headers("admin")).json()
    listed = {j["id"] for j in client.get("/jobs", headers=headers(role)).json()}
    assert {made[job] for job, roles in SEES_JOB.items() if role in roles} <= listed
    assert not {made[job] for job, roles in SEES_JOB.items() if role not in roles} & listed
    for job in listed:  # every job listed opens (others' pushes of this centre's uploads)
        assert client.get(f"/jobs/{job}", headers=headers(role)).status_code == 200
    assert role != "admin" or listed == {j["id"] for j in everything}
    paged = client.get("/jobs", headers=headers(role), params={"limit": 1, "offset": 1}).json()
    assert [j["id"] for j in paged] == sorted(listed, reverse=True)[1:2]
    for page in (client.get(p, headers=headers(role)).text for p in ("/ui/", "/ui/jobs-table")):
        for job, roles in SEES_JOB.items():
            assert (f'href="/ui/jobs/{made[job]}"' in page) == (role in roles), (job, role)


SEES_UPLOAD = {"upload_centre_a": {"admin", "centre_a"}, "upload_centre_b": {"admin", "centre_b"}}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("which", sorted(SEES_UPLOAD))
def test_an_upload_is_seen_and_pushed_only_within_its_scope(
    world: tuple[TestClient, dict[str, Any]], role: str, which: str
) -> None:
    client, made = world
    upload_id = made[which]
    preview = client.get(f"/uploads/{upload_id}/preview", headers=headers(role))
    page = client.get(f"/ui/uploads/{upload_id}", headers=headers(role))
    push = client.post(
        "/jobs/push", headers=headers(role), json={"upload_id": upload_id, "server": "local"}
    )
    home = client.get("/ui/", headers=headers(role)).text
    plot = client.get(f"/ui/uploads/{upload_id}/plots/swimmer.svg", headers=headers(role))
    # the plot is drawn in the background after the upload's check: within the scope it is
    # there (200) or not yet (404, not "no such upload"); outside it the upload is unknown
    if role in SEES_UPLOAD[which]:
        assert plot.status_code in (200, 404)
        assert "no such upload" not in plot.text
    else:
        assert (plot.status_code, "no such upload" in plot.text) == (404, True)
    if role in SEES_UPLOAD[which]:
        assert (preview.status_code, page.status_code, push.status_code) == (200, 200, 202)
        assert f"/ui/uploads/{upload_id}" in home
        # the push job is in the upload's scope: its centre sees it, whoever pushed
        centre = which.removeprefix("upload_")
        job = client.get(f"/jobs/{push.json()['id']}", headers=headers(centre))
        assert job.status_code == 200
    else:
        assert (preview.status_code, page.status_code) == (404, 404)
        summary = client.get(f"/ui/uploads/{upload_id}/summary", headers=headers(role))
        assert summary.status_code == 404
        assert push.status_code == (403 if role == "registry" else 404)
        assert upload_id not in home


@pytest.mark.parametrize("role", ROLES)
def test_what_a_role_may_never_do_is_403(
    world: tuple[TestClient, dict[str, Any]], role: str
) -> None:
    client, _ = world
    allowed = {
        "upload": role != "registry",
        "pull": role != "registry",
        "registry": role in ("admin", "registry"),
        "cache": role == "admin",
    }
    answers = {
        "upload": upload(client, role).status_code,
        "pull": client.post(
            "/jobs/pull",
            headers=headers(role),
            json={"server": "local", "selection": "search", "query": "_id=x"},
        ).status_code,
        "registry": client.post(
            "/jobs/registry", headers=headers(role), json={"registry": "net"}
        ).status_code,
        "cache": max(
            client.get("/cache/patients", headers=headers(role)).status_code,
            client.get("/cache/resources", headers=headers(role)).status_code,
        ),
    }
    for what, ok in allowed.items():
        if ok:
            assert answers[what] in (200, 201, 202), (what, answers)
        else:
            assert answers[what] == 403, (what, answers)
