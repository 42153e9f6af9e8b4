"""The workbench pages without a browser (issue 22): sign-in and its cookie, CSRF on every
form, sessions kept off the API, the check of an upload with its own mapping file, the
job's server-sent events, errors as pages. The browser journey is tests/browser."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fhir_cart.cache import open_cache
from fhir_cart.errors import Reject
from fhir_cart.service.access import check_password, hash_password
from fhir_cart.service.app import create_app
from fhir_cart.service.web.grid import fix_for, grids
from fhir_cart.settings import ServerSettings, Settings, UserSettings
from tests.conftest import FIXTURES, MAPPINGS
from tests.support.pages import checked, hashed, summarised, upload_id_of

PASSWORD = "a long synthetic password"
ADMIN_KEY = "pages-admin-key-0123456789abcdef01234"
BAD_FILE = FIXTURES / "bad" / "centre_b_bad.csv"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    settings = Settings(
        data_dir=tmp_path / "data",
        cache_url=f"sqlite:///{tmp_path / 'cache.sqlite'}",
        api_keys=[SecretStr(ADMIN_KEY)],
        users=[
            UserSettings(
                name="ana",
                role="centre",
                centre="centre_b",
                password_hash=SecretStr(hashed(PASSWORD)),
            )
        ],
        servers={"local": ServerSettings(base_url="http://127.0.0.1:9/fhir")},
    )
    application = create_app(settings, run_workers=False)
    application.state.cache = open_cache(settings.effective_cache_url())
    yield application
    application.state.cache.close()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found is not None
    return found.group(1)


def sign_in(client: TestClient, user: str = "ana", password: str = PASSWORD) -> str:
    """Signs in; the session's CSRF token (from the home page)."""
    form = client.get("/ui/login")
    answer = client.post(
        "/ui/login",
        data={"csrf": csrf_of(form.text), "user": user, "password": password},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/ui/").text)


def test_sign_in_sets_an_httponly_samesite_cookie_and_sign_out_ends_it(app: FastAPI) -> None:
    with TestClient(app, follow_redirects=False) as client:
        form = client.get("/ui/login")
        wrong = client.post(
            "/ui/login",
            data={"csrf": csrf_of(form.text), "user": "ana", "password": "wrong password!"},
        )
        assert wrong.status_code == 401
        assert "fhir_cart_session" not in client.cookies
        right = client.post(
            "/ui/login", data={"csrf": csrf_of(form.text), "user": "ana", "password": PASSWORD}
        )
        assert (right.status_code, right.headers["location"]) == (303, "/ui/")
        cookie = next(
            h for h in right.headers.get_list("set-cookie") if h.startswith("fhir_cart_session=")
        )
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        home = client.get("/ui/")
        assert home.status_code == 200
        assert "ana" in home.text
        assert "default-src 'self'" in home.headers["content-security-policy"]
        out = client.post("/ui/logout", data={"csrf": csrf_of(home.text)})
        assert out.status_code == 303
        client.cookies.set("fhir_cart_session", cookie.split(";")[0].split("=", 1)[1])
        assert client.get("/ui/").status_code == 303  # the old cookie opens nothing


def test_the_sign_in_form_needs_its_own_csrf_cookie(app: FastAPI) -> None:
    with TestClient(app, follow_redirects=False) as client:
        token = csrf_of(client.get("/ui/login").text)
        client.cookies.clear()  # a cross-site post carries no cookie of ours
        answer = client.post("/ui/login", data={"csrf": token, "user": "ana", "password": PASSWORD})
        assert answer.status_code == 403


def test_every_form_post_needs_the_session_csrf_token(app: FastAPI, tmp_path: Path) -> None:
    with TestClient(app, follow_redirects=False) as client:
        csrf = sign_in(client)
        posts = [
            ("/ui/uploads", {"mapping": "centre_b"}, True),
            ("/ui/logout", {}, False),
            ("/ui/jobs/pull", {"server": "local", "query": "_id=x"}, False),
            (f"/ui/uploads/{'0' * 32}/push", {"server": "local"}, False),
            ("/ui/jobs/1/resume", {}, False),
        ]
        for path, data, with_file in posts:
            files = {"file": ("b.csv", BAD_FILE.read_bytes())} if with_file else None
            for token in (None, "wrong", csrf[:-1]):
                sent = data if token is None else {**data, "csrf": token}
                answer = client.post(path, data=sent, files=files)
                assert answer.status_code == 403, (path, token, answer.text)
                assert "CSRF" in answer.text
        uploads = tmp_path / "data" / "uploads"
        assert not uploads.exists() or not any(uploads.iterdir())
        assert app.state.cache.list_runs() == []
        # the same token as a header (what htmx sends) is accepted
        answer = client.post(
            "/ui/jobs/pull",
            data={"server": "local", "query": "_id=x"},
            headers={"X-CSRF-Token": csrf},
        )
        assert answer.status_code == 303


def test_a_session_opens_pages_and_docs_but_not_the_api(app: FastAPI) -> None:
    with TestClient(app, follow_redirects=False) as client:
        sign_in(client)
        assert client.get("/docs").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/ui/docs-assets/swagger-ui-bundle.js").status_code == 200
        for path in ("/jobs", "/cache/patients", f"/uploads/{'0' * 32}/preview"):
            assert client.get(path).status_code == 401, path


def test_the_check_of_an_upload_with_its_own_mapping_marks_the_bad_cells(app: FastAPI) -> None:
    mapping = (MAPPINGS / "centres" / "centre_b.yaml").read_bytes()
    with TestClient(app) as client:
        csrf = sign_in(client)
        answer = client.post(
            "/ui/uploads",
            data={"csrf": csrf},
            files={
                "file": ("b.csv", BAD_FILE.read_bytes()),
                "mapping_file": ("mine.yaml", mapping),
            },
        )
        assert answer.status_code == 200
        assert re.search(r"/ui/uploads/[0-9a-f]{32}$", str(answer.url))
        page = checked(client, upload_id_of(answer)).text
        assert "Mapping: <strong>mapping</strong>" in page  # the upload's own mapping file
        bad = re.findall(r'<td class="bad" title="([^"]*)">.*?</td>', page, re.S)
        assert len(bad) == 5
        assert any("does not exist in February" in t for t in bad)
        assert re.search(r'<td class="bad"[^>]*>.*?31\.02\.2021', page, re.S)
        assert "write a real date" in page  # the fix column
        assert '"resourceType": "Bundle"' in page.replace("&#34;", '"')
        assert app.state.cache.list_runs() == []  # nothing queued, nothing sent


def test_an_upload_the_mapping_does_not_fit_is_shown_on_the_page(app: FastAPI) -> None:
    with TestClient(app) as client:
        csrf = sign_in(client)
        answer = client.post(
            "/ui/uploads",
            data={"csrf": csrf, "mapping": "seed"},
            files={"file": ("b.csv", BAD_FILE.read_bytes())},
        )
        page = checked(client, upload_id_of(answer))  # checked in the background
        assert page.status_code == 422
        assert page.headers["content-type"].startswith("text/html")
        assert 'role="alert"' in page.text
        assert "<table" in page.text  # the rejects
        assert "The upload was not kept" in page.text


def test_a_page_error_is_a_page(app: FastAPI) -> None:
    with TestClient(app) as client:
        sign_in(client)
        answer = client.get(f"/ui/uploads/{'0' * 32}")
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("text/html")
        assert "no such upload" in answer.text


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_job_events_follow_a_job_to_its_end(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each change of the job is sent once, in order, then "end". The job moves on only
    after the stream has read its last change (no sleeps: a loaded machine once made the
    stream miss a step that lasted 0.6 s)."""
    from fhir_cart.service.web import pages

    cache = app.state.cache
    owner = {"owner_role": "centre", "owner_centre": "centre_b"}
    run_id = cache.create_run(kind="push", server="x", status="pending", params=owner)
    reads = [0]
    read = threading.Condition()
    real = pages.get_job

    def counted(*args: object) -> object:
        job = real(*args)  # type: ignore[arg-type]
        with read:
            reads[0] += 1
            read.notify_all()
        return job

    def seen(after: int) -> None:
        """Until a read has begun after the change made when ``after`` reads were done: it
        saw the change, and the stream sends it before it reads again."""
        with read:
            assert read.wait_for(lambda: reads[0] >= after + 2, timeout=60)

    monkeypatch.setattr(pages, "get_job", counted)
    steps = [
        *({"status": "running", "progress_done": d, "progress_total": 3} for d in (1, 2, 3)),
        {"status": "succeeded"},
    ]

    def work() -> None:
        now = 0  # the job was made before any read
        for step in steps:
            seen(now)
            with read:
                now = reads[0]
            cache.update_run(run_id, **step)

    with TestClient(app) as client:
        sign_in(client)
        worker = threading.Thread(target=work)
        worker.start()
        with client.stream("GET", f"/ui/jobs/{run_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            text = "".join(stream.iter_text())
        worker.join()
    events = re.findall(r"event: (\w+)\ndata: (.*)\n\n", text)
    assert [name for name, _ in events][-1] == "end"
    progress = [data for name, data in events if name == "progress"]
    assert [name for name, _ in events] == ["progress"] * 5 + ["end"]
    assert '"status":"pending"' in progress[0]
    assert [p[p.index('"done"') :][:8] for p in progress[1:4]] == [
        '"done":1',
        '"done":2',
        '"done":3',
    ]
    assert '"status":"succeeded"' in progress[-1]


def test_passwords_are_hashed_and_checked() -> None:
    stored = hash_password("correct horse battery")
    assert "correct" not in stored
    assert stored.startswith("scrypt$")
    assert check_password("correct horse battery", stored)
    assert not check_password("correct horse batterY", stored)
    assert not check_password("x", "plain-text")


def test_grids_mark_the_rejected_cells_of_their_sheet() -> None:
    sheets = [
        (
            "s.csv",
            [
                ["id", "sex", "date"],
                ["1", "x", "2020-01-01"],
                ["2", "m", "bad"],
                ["3", "f", "2020-01-03"],
            ],
        )
    ]
    rejects = [
        Reject("s.csv", 2, "sex", "x", "unknown word; expected one of m, f", "patients"),
        Reject("s.csv", 3, "date", "bad", "not a date", "events"),
    ]
    (grid,) = grids(sheets, rejects)
    assert grid.header == ["id", "sex", "date"]
    assert set(grid.bad) == {(2, "sex"), (3, "date")}
    assert grid.bad_rows == {2, 3}
    assert [n for n, _ in grid.rows] == [2, 3, 4]
    assert fix_for(rejects[0]).startswith("write one of the expected words")
    assert "date" in fix_for(rejects[1])


def test_the_pages_import_no_sync_cache_or_study_internals() -> None:
    """The pages go through the application layer (and the API's own route functions):
    nothing of the sync jobs, the cache, the study reader or the bundle builder directly."""
    import ast

    import fhir_cart.service.web as web

    folder = Path(web.__file__).parent
    imported = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert "fhir_cart.service.deps" in imported  # never vacuous
    forbidden = ("fhir_cart.sync", "fhir_cart.cache", "fhir_cart.study", "fhir_cart.bundle")
    assert sorted(m for m in imported if m.startswith(forbidden)) == []


def test_the_check_of_a_workbook_shows_its_sheets(app: FastAPI) -> None:
    with TestClient(app) as client:
        csrf = sign_in(client)
        workbook = (FIXTURES / "seed" / "seed_cohort.xlsx").read_bytes()
        answer = client.post(
            "/ui/uploads",
            data={"csrf": csrf, "mapping": "seed"},
            files={"file": ("seed.xlsx", workbook)},
        )
        assert answer.status_code == 200, answer.text[:2000]
        page = checked(client, upload_id_of(answer)).text
        captions = re.findall(r"<caption>([^<(]+)", page)
        assert len([c for c in captions if not c.startswith("The first")]) >= 2  # sheets
        assert "No problems found." in page


@pytest.mark.slow
def test_the_summary_page_shows_the_measures_beside_the_paper_and_the_plots(
    app: FastAPI,
) -> None:
    with TestClient(app) as client:
        csrf = sign_in(client)
        workbook = (FIXTURES / "seed" / "seed_cohort.xlsx").read_bytes()
        check = client.post(
            "/ui/uploads",
            data={"csrf": csrf, "mapping": "seed"},
            files={"file": ("seed.xlsx", workbook)},
        )
        upload_id = upload_id_of(check)
        page = summarised(client, upload_id)
        assert page.status_code == 200
        assert re.search(r'<p id="study">Study <strong>Marschollek 2022', page.text)
        rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td>", page.text)
        assert len(rows) >= 5
        assert any(paper != "not reported" for _, _, paper in rows)
        plots = re.findall(r'<img src="([^"]+\.svg)"', page.text)
        assert plots
        for src in plots:
            svg = client.get(src)
            assert svg.headers["content-type"] == "image/svg+xml"
            assert svg.text.lstrip().startswith(("<?xml", "<svg"))


def test_sign_ins_stop_after_five_failures_from_one_address(app: FastAPI) -> None:
    with TestClient(app, follow_redirects=False) as client:
        token = csrf_of(client.get("/ui/login").text)
        for _ in range(5):
            wrong = client.post(
                "/ui/login", data={"csrf": token, "user": "ana", "password": "wrong password!"}
            )
            assert wrong.status_code == 401
        right = client.post("/ui/login", data={"csrf": token, "user": "ana", "password": PASSWORD})
        assert right.status_code == 429
        assert "fhir_cart_session" not in client.cookies
