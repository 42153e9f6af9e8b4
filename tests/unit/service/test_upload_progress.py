"""Uploads in the pages (issue 22): every upload checked in the background with a progress
bar, the form answering before the check and other pages answering meanwhile (shown by the
order of events: the check is held inside its reading while pages are asked for); a failed
background check is shown on the page and leaves nothing; each upload is read once for its
check and summary; the summary worked out in the background, its page following it."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fhir_cart.cache import open_cache
from fhir_cart.service.app import create_app
from fhir_cart.service.web import checks
from fhir_cart.settings import Settings, UserSettings
from tests.support import FIXTURES
from tests.support.big_study import centre_b_file
from tests.support.pages import checked, hashed, summarised, upload_id_of

PASSWORD = "a long synthetic password"
BAD_FILE = FIXTURES / "bad" / "centre_b_bad.csv"
WAIT = 60.0
"""Seconds an event is waited for before the test gives up (never a measured time)."""


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    settings = Settings(
        data_dir=tmp_path / "data",
        cache_url=f"sqlite:///{tmp_path / 'cache.sqlite'}",
        users=[
            UserSettings(
                name=name,
                role="centre",
                centre=centre,
                password_hash=SecretStr(hashed(PASSWORD)),
            )
            for name, centre in (("ana", "centre_b"), ("bo", "centre_a"))
        ],
    )
    application = create_app(settings, run_workers=False)
    application.state.cache = open_cache(settings.effective_cache_url())
    yield application
    application.state.cache.close()


def sign_in(client: TestClient, user: str = "ana") -> str:
    def csrf_of(html: str) -> str:
        found = re.search(r'name="csrf" value="([^"]*)"', html)
        assert found is not None
        return found.group(1)

    form = client.get("/ui/login")
    client.post("/ui/login", data={"csrf": csrf_of(form.text), "user": user, "password": PASSWORD})
    return csrf_of(client.get("/ui/").text)


def held_reading(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, ...]:
    """The application's study reader, held after its first patient until released."""
    application = app.state.application
    original = application.read_study
    inside, release = threading.Event(), threading.Event()

    def read(path: Path, mapping: Any, *, on_patient: Any = None) -> Any:
        def each(n: int) -> None:
            on_patient(n)
            if n == 1:
                inside.set()
                assert release.wait(WAIT)

        return original(path, mapping, on_patient=each if on_patient else None)

    monkeypatch.setattr(application, "read_study", read)
    return inside, release


def until_ended(client: TestClient, upload_id: str) -> None:
    for _ in range(10_000):  # the check ends once released; htmx asks the same way
        if client.get(f"/ui/uploads/{upload_id}/progress").headers.get("hx-refresh"):
            return
        threading.Event().wait(0.05)
    raise AssertionError("the check did not end")


def test_an_upload_is_checked_in_the_background_while_other_pages_answer(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, release = held_reading(app, monkeypatch)
    with TestClient(app, follow_redirects=False) as client:
        csrf = sign_in(client)
        sent = client.post(
            "/ui/uploads",
            data={"csrf": csrf, "mapping": "centre_b"},
            files={"file": ("b.csv", BAD_FILE.read_bytes())},
        )
        assert sent.status_code == 303
        upload_id = sent.headers["location"].rsplit("/", 1)[1]
        assert inside.wait(WAIT)  # the check is now held inside its reading
        # other pages answer meanwhile
        assert client.get("/ui/").status_code == 200
        assert client.get("/ui/jobs-table").status_code == 200
        page = client.get(f"/ui/uploads/{upload_id}")
        assert page.status_code == 200
        assert "<h1>Checking upload" in page.text
        bar = client.get(f"/ui/uploads/{upload_id}/progress")
        assert 'hx-trigger="every 1s"' in bar.text
        assert re.search(r'<progress id="check-bar" max="(\d+)" value="1">', bar.text)
        assert "hx-refresh" not in bar.headers
        # another centre's user learns nothing of it
        other = TestClient(app, follow_redirects=False)
        sign_in(other, "bo")
        assert other.get(f"/ui/uploads/{upload_id}/progress").status_code == 404
        assert other.get(f"/ui/uploads/{upload_id}").status_code == 404
        release.set()
        until_ended(client, upload_id)
        done = client.get(f"/ui/uploads/{upload_id}")
    assert "<h1>Check of upload" in done.text
    assert re.search(r'<td class="bad"[^>]*>.*?31\.02\.2021', done.text, re.S)
    assert app.state.cache.list_runs() == []  # nothing queued, nothing sent


def test_a_failed_background_check_is_shown_and_leaves_nothing(
    app: FastAPI, tmp_path: Path
) -> None:
    with TestClient(app, follow_redirects=False) as client:
        csrf = sign_in(client)
        sent = client.post(
            "/ui/uploads",
            data={"csrf": csrf, "mapping": "seed"},
            files={"file": ("b.csv", BAD_FILE.read_bytes())},
        )
        upload_id = sent.headers["location"].rsplit("/", 1)[1]
        until_ended(client, upload_id)
        page = client.get(f"/ui/uploads/{upload_id}")
    assert 'role="alert"' in page.text
    assert "was not kept" in page.text
    assert not (tmp_path / "data" / "uploads" / upload_id).exists()


def test_an_upload_is_read_once_for_its_check_and_its_summary(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    application = app.state.application
    reads: list[Path] = []
    original = application.read_study

    def counted(path: Path, mapping: Any, **options: Any) -> Any:
        reads.append(path)
        return original(path, mapping, **options)

    monkeypatch.setattr(application, "read_study", counted)
    with TestClient(app) as client:
        csrf = sign_in(client)
        answer = client.post(
            "/ui/uploads",
            data={"csrf": csrf, "mapping": "centre_b"},
            files={"file": ("b.csv", BAD_FILE.read_bytes())},
        )
        upload_id = upload_id_of(answer)
        checked(client, upload_id)
        summarised(client, upload_id)
        pages = [client.get(f"/ui/uploads/{upload_id}").text for _ in range(3)]
        summaries = [client.get(f"/ui/uploads/{upload_id}/summary").text for _ in range(3)]
    # one read: the check's records are the summary's (worked out in the background after
    # the check), and both are kept for every view after
    assert len(reads) == 1
    assert "<h1>Check of upload" in pages[0]
    assert len(set(pages)) == 1
    assert 'id="measures"' in summaries[0]
    assert len(set(summaries)) == 1


def held_summary(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, ...]:
    """The application's study summary, held until released."""
    application = app.state.application
    original = application.study_summary
    inside, release = threading.Event(), threading.Event()

    def summary(*args: Any, **options: Any) -> Any:
        inside.set()
        assert release.wait(WAIT)
        return original(*args, **options)

    monkeypatch.setattr(application, "study_summary", summary)
    return inside, release


def test_the_summary_page_follows_its_work_in_the_background(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, release = held_summary(app, monkeypatch)
    with TestClient(app) as client:
        csrf = sign_in(client)
        answer = client.post(
            "/ui/uploads",
            data={"csrf": csrf, "mapping": "centre_b"},
            files={"file": ("b.csv", BAD_FILE.read_bytes())},
        )
        upload_id = upload_id_of(answer)
        assert "<h1>Check of upload" in checked(client, upload_id).text
        assert inside.wait(WAIT)  # the summary is now held inside its work
        page = client.get(f"/ui/uploads/{upload_id}/summary")
        assert page.status_code == 200
        assert 'hx-get="/ui/uploads/' + upload_id + '/summary/progress"' in page.text
        assert "Computing the measures" in page.text
        assert 'id="measures"' not in page.text
        note = client.get(f"/ui/uploads/{upload_id}/summary/progress")
        assert "hx-refresh" not in note.headers
        assert client.get("/ui/").status_code == 200  # other pages answer meanwhile
        release.set()
        for _ in range(10_000):
            note = client.get(f"/ui/uploads/{upload_id}/summary/progress")
            if note.headers.get("hx-refresh"):
                break
            threading.Event().wait(0.05)
        assert note.headers.get("hx-refresh") == "true"
        done = client.get(f"/ui/uploads/{upload_id}/summary")
        plots = [client.get(src).text for src in re.findall(r'<img src="([^"]+)"', done.text)]
    assert 'id="measures"' in done.text
    assert "summary-progress" not in done.text
    # centre B's file under the seed study: the plots name the upload, not the seed cohort
    assert len(plots) == 2
    for svg in plots:
        shown = " ".join(re.findall(r"<!-- (.*?) -->", svg))  # a title's lines joined
        assert "seed cohort" not in shown
        assert f"pload {upload_id[:8]} (mapping centre_b)" in shown


def test_a_check_not_kept_here_is_started_again_in_the_background(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a second worker, or after a restart, is asked for an upload's page: the page
    starts the check in the pool and follows it; it never reads the file itself."""
    with TestClient(app, follow_redirects=False) as client:
        csrf = sign_in(client)
        answer = client.post(
            "/ui/uploads",
            data={"csrf": csrf, "mapping": "centre_b"},
            files={"file": ("b.csv", BAD_FILE.read_bytes())},
        )
        upload_id = upload_id_of(answer)
        checked(client, upload_id)
        summarised(client, upload_id)
        app.state.checks.close()
        app.state.checks = checks.Checks()  # nothing kept, nothing running here
        inside, release = held_reading(app, monkeypatch)
        page = client.get(f"/ui/uploads/{upload_id}")
        assert inside.wait(WAIT)
        assert "<h1>Checking upload" in page.text
        summary = client.get(f"/ui/uploads/{upload_id}/summary")
        assert "The file is being checked first" in summary.text
        release.set()
        assert "<h1>Check of upload" in checked(client, upload_id).text
        assert 'id="measures"' in summarised(client, upload_id).text
    assert (app.state.application.settings.data_dir / "uploads" / upload_id).is_dir()


@pytest.mark.slow
def test_a_10000_patient_upload_is_checked_in_the_background(app: FastAPI, tmp_path: Path) -> None:
    big = centre_b_file(10_000, tmp_path / "big.csv")
    with TestClient(app, follow_redirects=False) as client:
        csrf = sign_in(client)
        with big.open("rb") as handle:
            sent = client.post(
                "/ui/uploads",
                data={"csrf": csrf, "mapping": "centre_b"},
                files={"file": ("big.csv", handle)},
            )
        upload_id = sent.headers["location"].rsplit("/", 1)[1]
        first = client.get(f"/ui/uploads/{upload_id}/progress")
        assert 'id="check-bar" max="10000"' in first.text
        until_ended(client, upload_id)
        done = client.get(f"/ui/uploads/{upload_id}")
    assert re.search(r"Read: <strong>10000</strong> patients", done.text)
