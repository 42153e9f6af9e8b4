"""Page sessions outlive the process (issue 22): kept in the data folder, a restart or a
second worker over the same folder keeps everyone signed in, sign-out ends the session for
every worker, and a changed password or a removed user ends it; the cookie is still
HttpOnly and SameSite=Strict, forms still need the session's CSRF token, and the token
itself is never written to disk."""

from __future__ import annotations

import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fhir_cart.cache import open_cache
from fhir_cart.service.access import Principal, hash_password
from fhir_cart.service.app import create_app
from fhir_cart.service.web.session import COOKIE, Sessions
from fhir_cart.settings import ServerSettings, Settings, UserSettings

PASSWORD = "a long synthetic password"


def settings_for(tmp_path: Path, password_hash: str | None = None) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        cache_url=f"sqlite:///{tmp_path / 'cache.sqlite'}",
        users=[
            UserSettings(
                name="ana",
                role="centre",
                centre="centre_b",
                password_hash=SecretStr(password_hash or HASH),
            )
        ],
        servers={"local": ServerSettings(base_url="http://127.0.0.1:9/fhir")},
    )


HASH = hash_password(PASSWORD)


def worker(settings: Settings) -> Iterator[TestClient]:
    app: FastAPI = create_app(settings, run_workers=False)
    app.state.cache = open_cache(settings.effective_cache_url())
    try:
        with TestClient(app, follow_redirects=False) as client:
            yield client
    finally:
        app.state.cache.close()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found is not None
    return found.group(1)


@pytest.fixture
def signed_in(tmp_path: Path) -> tuple[str, str]:
    """A session opened on one worker (which then stops): its cookie and CSRF token."""
    for client in worker(settings_for(tmp_path)):
        form = client.get("/ui/login")
        answer = client.post(
            "/ui/login", data={"csrf": csrf_of(form.text), "user": "ana", "password": PASSWORD}
        )
        assert answer.status_code == 303
        cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(COOKIE))
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        return client.cookies[COOKIE], csrf_of(client.get("/ui/").text)
    raise AssertionError("no worker")


def test_a_session_outlives_a_restart_and_opens_a_second_worker(
    tmp_path: Path, signed_in: tuple[str, str]
) -> None:
    token, csrf = signed_in
    for client in worker(settings_for(tmp_path)):  # a new process over the same data folder
        client.cookies.set(COOKIE, token)
        home = client.get("/ui/")
        assert home.status_code == 200
        assert "Signed in as <strong>ana</strong>" in home.text
        assert csrf_of(home.text) == csrf
        form = {"server": "local", "query": "_id=x"}
        assert client.post("/ui/jobs/pull", data={**form, "csrf": "wrong"}).status_code == 403
        assert client.post("/ui/jobs/pull", data={**form, "csrf": csrf}).status_code == 303
        assert client.post("/ui/logout", data={"csrf": csrf}).status_code == 303
    for client in worker(settings_for(tmp_path)):  # signed out on one: on every worker
        client.cookies.set(COOKIE, token)
        assert client.get("/ui/").status_code == 303


def test_a_changed_password_ends_the_session(tmp_path: Path, signed_in: tuple[str, str]) -> None:
    token, _ = signed_in
    changed = settings_for(tmp_path, hash_password("another long password"))
    for client in worker(changed):
        client.cookies.set(COOKIE, token)
        answer = client.get("/ui/")
        assert (answer.status_code, answer.headers["location"]) == (303, "/ui/login")
    removed = settings_for(tmp_path).model_copy(
        update={"users": [], "api_keys": [SecretStr("an-admin-key-0123456789abcdef0123456")]}
    )
    for client in worker(removed):
        client.cookies.set(COOKIE, token)
        assert client.get("/ui/").status_code == 303


def test_the_token_is_not_on_disk_and_the_files_are_private(
    tmp_path: Path, signed_in: tuple[str, str]
) -> None:
    token, _ = signed_in
    files = list((tmp_path / "data" / "sessions").glob("*.json"))
    assert len(files) == 1
    assert token not in files[0].read_text()
    assert token not in files[0].name
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700


def test_an_expired_session_opens_nothing(tmp_path: Path) -> None:
    sessions = Sessions(1.0, tmp_path / "sessions")
    token, _ = sessions.create(Principal("ana", "centre", "centre_b"))
    assert sessions.get(token) is not None
    later = time.time() + 3601
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "time", lambda: later)
        assert sessions.get(token) is None
    assert sessions.get(token) is None  # and its file is gone
    assert list((tmp_path / "sessions").glob("*.json")) == []
