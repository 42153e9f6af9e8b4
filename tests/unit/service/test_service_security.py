"""What the service refuses, derived from the running app (its routes as registered), not
from the published contract: every path but /health needs a key; no keys configured
refuses everything; bodies are limited while they stream, before the key is even looked
at; an unexpected error is a 500 problem logged by class name, never a traceback."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.routing import Route

from fhir_cart.cache import open_cache
from fhir_cart.service.app import create_app
from fhir_cart.settings import Settings
from tests.support import CENTRE_B_FILE

KEY = {"X-API-Key": "test-key-123-0123456789abcdef0123"}
LIMIT = 200_000


def make_settings(tmp_path: Path, keys: list[str] | None = None) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        cache_url=f"sqlite:///{tmp_path / 'cache.sqlite'}",
        api_keys=[SecretStr(k) for k in ([KEY["X-API-Key"]] if keys is None else keys)],
        max_upload_bytes=LIMIT,
        max_body_bytes=10_000,
    )


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    application = create_app(make_settings(tmp_path), run_workers=False)
    application.state.cache = open_cache(f"sqlite:///{tmp_path / 'cache.sqlite'}")
    yield application
    application.state.cache.close()


def every_request(app: FastAPI) -> list[tuple[str, str]]:
    """(method, concrete path) for every route the app serves, path parameters filled."""
    out = []
    for prefix, route in _routes(app.routes):
        path = re.sub(r"\{[^}]+\}", "1", prefix + route.path)
        out += [(m, path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return out


def _routes(routes: Sequence[Any], prefix: str = "") -> Iterator[tuple[str, Route]]:
    """Every route, also those of included routers (FastAPI keeps an included router as one
    entry of ``app.routes``, its ``original_router`` holding the routes)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included.routes, prefix + route.include_context.prefix)
            continue
        assert isinstance(route, Route), route
        yield prefix, route


OPEN = {
    ("GET", "/health"): 200,
    ("GET", "/"): 303,
    ("GET", "/ui/login"): 200,
    ("POST", "/ui/login"): 403,
    ("GET", "/ui/static/1"): 404,
}
"""Served without a key: liveness, the redirect to the pages, the sign-in page (its post
refused without the form's CSRF token) and the pages' own scripts and styles."""


def test_every_route_but_health_needs_a_key(app: FastAPI) -> None:
    requests = every_request(app)
    assert len(requests) >= 17  # the API, /docs, /redoc, /openapi.json: never vacuous
    open_, pages = {}, []
    with TestClient(app, follow_redirects=False) as client:
        for method, path in requests:
            anonymous = client.request(method, path)
            if path.startswith("/ui/") and anonymous.status_code == 303:
                # a page without a key or a session: to the sign-in page, nothing shown
                assert anonymous.headers["location"] == "/ui/login", (method, path)
                assert anonymous.content == b""
                pages.append((method, path))
            elif anonymous.status_code != 401:
                open_[(method, path)] = anonymous.status_code
                continue
            else:
                assert anonymous.headers["content-type"] == "application/problem+json"
            wrong = client.request(method, path, headers={"X-API-Key": "wrong"})
            assert wrong.status_code == 403, (method, path)
            bearer = client.request(method, path, headers={"Authorization": "Bearer wrong"})
            assert bearer.status_code == 403, (method, path)
    assert open_ == OPEN
    assert len(pages) >= 8


def test_with_no_keys_configured_everything_but_health_is_refused(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, keys=[]), run_workers=False)
    with TestClient(app, follow_redirects=False) as client:
        for method, path in every_request(app):
            for headers in ({}, KEY, {"Authorization": "Bearer "}, {"X-API-Key": ""}):
                answer = client.request(method, path, headers=headers)
                if (method, path) in OPEN:
                    assert answer.status_code == OPEN[method, path]
                else:
                    assert answer.status_code == 403, (method, path, headers)
                    assert "no API keys are configured" in answer.json()["detail"]


class Body:
    """An ASGI receive that hands out ``total`` bytes in 64 KiB chunks and counts them."""

    def __init__(self, total: int, head: bytes = b"") -> None:
        self.left = total
        self.sent = 0
        self.head = head

    async def __call__(self) -> dict[str, Any]:
        chunk = min(self.left, 65536)
        data = (self.head + b"x" * chunk)[:chunk] if self.sent == 0 else b"x" * chunk
        self.left -= chunk
        self.sent += chunk
        return {"type": "http.request", "body": data, "more_body": self.left > 0}


# a well-formed start of a multipart upload, so the parser keeps reading the file part
PART = (
    b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
    b"Content-Type: text/csv\r\n\r\n"
)


async def call(
    app: FastAPI, method: str, path: str, body: Body, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, body, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], {"sent": body.sent}


CT_MULTIPART = "multipart/form-data; boundary=xyz"


@pytest.mark.parametrize(
    ("path", "content_type"), [("/uploads", CT_MULTIPART), ("/jobs/push", "application/json")]
)
async def test_bodies_are_not_read_without_a_key(
    app: FastAPI, path: str, content_type: str
) -> None:
    body = Body(50_000_000)
    status, seen = await call(app, "POST", path, body, {"content-type": content_type})
    assert (status, seen["sent"]) == (401, 0)


@pytest.mark.parametrize(
    ("path", "size", "limit"),
    [("/uploads", 400_000_000, LIMIT), ("/jobs/push", 200_000_000, 10_000)],
)
async def test_a_declared_size_over_the_limit_is_refused_before_the_key(
    app: FastAPI, path: str, size: int, limit: int
) -> None:
    headers = {"content-type": "application/json", "content-length": str(size)}
    status, seen = await call(app, "POST", path, Body(size), headers)
    assert (status, seen["sent"]) == (413, 0)


@pytest.mark.parametrize(
    ("path", "content_type", "limit"),
    [("/uploads", CT_MULTIPART, LIMIT), ("/jobs/push", "application/json", 10_000)],
)
async def test_an_undeclared_body_stops_being_read_at_the_limit(
    app: FastAPI, path: str, content_type: str, limit: int
) -> None:
    body = Body(200_000_000, PART if path == "/uploads" else b'{"upload_id": "')
    headers = {"content-type": content_type, **KEY}
    status, seen = await call(app, "POST", path, body, headers)
    assert status == 413
    assert seen["sent"] <= limit + 64 * 1024 + 65536


def test_an_unexpected_error_is_a_problem_logged_by_class_name_only(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def broken(self: object) -> list[object]:
        raise ValueError("cell value MRN-SECRET-4711")

    monkeypatch.setattr(type(app.state.cache), "study_records", broken)
    with TestClient(app) as client:  # raises what escapes the app, as a server would log it
        answer = client.get("/cache/patients", headers=KEY)
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert "SECRET" not in answer.text
    assert "SECRET" not in caplog.text
    assert "ValueError" in caplog.text
    assert all(record.exc_info is None for record in caplog.records)


def test_a_traversing_file_name_writes_only_inside_the_upload_folder(
    app: FastAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    name = f"evil-{uuid.uuid4().hex}.csv"
    data_dir = tmp_path / "data"
    with TestClient(app) as client, CENTRE_B_FILE.open("rb") as handle:
        answer = client.post(
            "/uploads",
            headers=KEY,
            data={"mapping": "centre_b"},
            files={"file": (f"../../../../{name}", handle)},
        )
    assert answer.status_code == 201, answer.text
    folder = data_dir / "uploads" / answer.json()["upload_id"]
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "study.csv"]
    # where the client's name would land, resolved from the folder, from the data dir and
    # from the working directory, and anything under the test's folder
    for base in (folder, data_dir, data_dir / "uploads", tmp_path, Path.cwd()):
        assert not (base / f"../../../../{name}").resolve().exists()
        assert not (base / name).exists()
    assert [p for p in tmp_path.rglob("*") if name in p.name] == []


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", b"0" * 150_000_000)
    return buffer.getvalue()


def test_refused_uploads_leave_nothing_on_disk(app: FastAPI, tmp_path: Path) -> None:
    bomb = _zip_bomb()
    assert len(bomb) < LIMIT
    with TestClient(app) as client:
        for name, content, status, words in [
            ("a.xlsx", b"not a zip", 422, "not an .xlsx workbook"),
            ("b.xlsx", bomb, 413, "unpacks to"),
            ("c.csv", b"x" * (LIMIT + 1), 413, "larger than"),
            ("d.csv", b"study_id\n" + b"y" * 140_000 + b"\n", 422, "field larger"),
        ]:
            answer = client.post(
                "/uploads",
                headers=KEY,
                data={"mapping": "centre_b"},
                files={"file": (name, content)},
            )
            assert answer.status_code == status, (name, answer.text)
            assert words in answer.json()["detail"]
    uploads = tmp_path / "data" / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
async def test_a_slow_upload_does_not_block_health(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_cart.application import Application

    real = Application.read_study

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(Application, "read_study", slow)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        files = {"file": ("c.csv", CENTRE_B_FILE.read_bytes())}
        upload = asyncio.create_task(
            client.post("/uploads", headers=KEY, data={"mapping": "centre_b"}, files=files)
        )
        started = time.perf_counter()  # a blocked loop would delay even this sleep
        await asyncio.sleep(0.3)
        health = await client.get("/health")
        waited = time.perf_counter() - started - 0.3
        assert (await upload).status_code == 201
    assert health.status_code == 200
    assert waited < 0.5


def _near_misses() -> list[dict[str, str]]:
    """Headers that hold the key almost, or in the wrong place: each must be refused."""
    key = KEY["X-API-Key"]
    return [
        {"X-API-Key": key[:8] + "x" * (len(key) - 8)},  # the first 8 bytes of the real key
        {"X-API-Key": key[:-1]},  # all but its last
        {"X-API-Key": key + "x"},
        {"Authorization": f"Basic {key}"},  # the key under another scheme
        {"Authorization": f"Token {key}"},
        {"Authorization": key},
    ]


@pytest.mark.parametrize("headers", _near_misses())
def test_a_near_miss_key_is_refused_by_the_guard(app: FastAPI, headers: dict[str, str]) -> None:
    with TestClient(app) as client:
        # /openapi.json and /docs have no route-level check: the Guard alone decides there
        for path in ("/jobs", "/openapi.json", "/docs"):
            answer = client.get(path, headers=headers)
            assert answer.status_code in (401, 403), (path, headers)
            assert client.get(path, headers=KEY).status_code == 200
        assert (
            client.get("/jobs", headers={"Authorization": f"bearer {KEY['X-API-Key']}"}).status_code
            == 200
        )


@pytest.mark.parametrize("headers", [{}, *_near_misses()])
def test_the_route_level_key_check_refuses_on_its_own(
    app: FastAPI, headers: dict[str, str]
) -> None:
    """Without the Guard middleware (left out by mistake), each route still checks the key."""
    from fhir_cart.service.guard import Guard

    app.user_middleware = [m for m in app.user_middleware if m.cls is not Guard]
    with TestClient(app) as client:
        assert client.get("/jobs", headers=headers).status_code in (401, 403), headers
        assert client.get("/jobs", headers=KEY).status_code == 200


@pytest.mark.parametrize("keys", [["x" * 31], [KEY["X-API-Key"], "short"]])
def test_the_service_refuses_to_start_with_a_short_key(tmp_path: Path, keys: list[str]) -> None:
    from fhir_cart.errors import ConfigError

    with pytest.raises(ConfigError, match=r"api_keys: key \d of \d is shorter than 32"):
        create_app(make_settings(tmp_path, keys=keys), run_workers=False)
    create_app(make_settings(tmp_path, keys=["x" * 32]), run_workers=False)
