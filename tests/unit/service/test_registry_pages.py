"""The registry pages (issue 22 item 6) without a browser: every role on every route
(registry managers and admins in, centres 403), a build started from the page, the heat
map with its values as text, conflicts with their rule, and the review queue: a pair
confirmed and a pair refused in the page are kept with who and when in the registry's
decisions file, and the next build honours both. The browser journey is
tests/browser/test_registry_review.py."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fhir_cart.cache import open_cache
from fhir_cart.registry.decisions import read_decisions
from fhir_cart.service.app import create_app
from fhir_cart.service.jobs import job_dir, run_worker
from fhir_cart.service.web.registry_view import heat_map, linked_pairs, shade
from fhir_cart.settings import Settings, UserSettings
from tests.support.pages import hashed
from tests.support.registry_net import REGISTRY_KEY, install_net

PASSWORD = "a long synthetic password"
USERS = {"admin": "ada", "registry": "rui", "centre": "cem"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    settings = Settings(
        data_dir=tmp_path / "data",
        cache_url=f"sqlite:///{tmp_path / 'cache.sqlite'}",
        registry_key=SecretStr(REGISTRY_KEY),
        users=[
            UserSettings(
                name=name,
                role=role,
                centre="berlin" if role == "centre" else None,
                password_hash=SecretStr(hashed(PASSWORD)),
            )
            for role, name in USERS.items()
        ],
    )
    install_net(tmp_path / "data")
    application = create_app(settings, run_workers=False)
    application.state.cache = open_cache(settings.effective_cache_url())
    yield application
    application.state.cache.close()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found is not None
    return found.group(1)


def sign_in(client: TestClient, role: str) -> str:
    form = client.get("/ui/login")
    answer = client.post(
        "/ui/login", data={"csrf": csrf_of(form.text), "user": USERS[role], "password": PASSWORD}
    )
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/ui/").text)


def run_jobs(app: FastAPI) -> None:
    asyncio.run(run_worker(app.state.application, app.state.cache, until_empty=True))


PAIR = ("p" + "0" * 32, "p" + "1" * 32)
ROUTES = [
    ("GET", "/ui/registries", {}),
    ("GET", "/ui/registries/net", {}),
    ("POST", "/ui/registries/net/build", {}),
    ("POST", "/ui/registries/net/decide", {"left": PAIR[0], "right": PAIR[1], "decision": "link"}),
]


@pytest.mark.parametrize("role", sorted(USERS))
@pytest.mark.parametrize(("method", "route", "form"), ROUTES)
def test_every_registry_route_is_for_registry_managers_and_admins_only(
    app: FastAPI, tmp_path: Path, role: str, method: str, route: str, form: dict[str, str]
) -> None:
    with TestClient(app, follow_redirects=False) as client:
        csrf = sign_in(client, role)
        answer = client.request(
            method, route, data={**form, "csrf": csrf} if form or method == "POST" else None
        )
        if role == "centre":
            assert answer.status_code == 403, answer.text
            assert "centre role cannot see the registry" in answer.text
            assert 'href="/ui/registries"' not in client.get("/ui/").text  # not in the menu
        else:
            assert answer.status_code == (200 if method == "GET" else 303), answer.text
    decisions = tmp_path / "data" / "registries" / "net" / "decisions.csv"
    started = app.state.cache.list_runs()
    if role == "centre":  # nothing was done
        assert not decisions.exists()
        assert started == []
    elif route.endswith("/decide"):
        assert read_decisions(decisions)[PAIR].by == USERS[role]
    elif route.endswith("/build"):
        assert [r.kind for r in started] == ["registry"]


@pytest.mark.parametrize("role", ["admin", "registry"])
def test_a_form_without_the_csrf_token_changes_nothing(
    app: FastAPI, tmp_path: Path, role: str
) -> None:
    with TestClient(app, follow_redirects=False) as client:
        sign_in(client, role)
        for route, form in ((r, f) for m, r, f in ROUTES if m == "POST"):
            assert client.post(route, data={**form, "csrf": "wrong"}).status_code == 403
    assert not (tmp_path / "data" / "registries" / "net" / "decisions.csv").exists()
    assert app.state.cache.list_runs() == []


def test_an_unknown_registry_or_a_bad_pair_is_refused(app: FastAPI) -> None:
    with TestClient(app, follow_redirects=False) as client:
        csrf = sign_in(client, "registry")
        assert client.get("/ui/registries/nope").status_code == 404
        assert client.get("/ui/registries/..%2Fnet").status_code == 404
        form = {"csrf": csrf, "left": "p12", "right": PAIR[1], "decision": "link"}
        bad = client.post("/ui/registries/net/decide", data=form)
        assert bad.status_code == 422
        assert "is not a record pseudonym" in bad.text


def test_the_heat_map_writes_each_value_and_shades_by_step() -> None:
    centres, rows = heat_map(
        {"b": {"completeness": {"sex": 1.0, "mrd": 0.0}}, "a": {"completeness": {"sex": 0.5}}}
    )
    assert centres == ["a", "b"]
    assert [(r.variable, r.cells) for r in rows] == [("mrd", [None, 0.0]), ("sex", [0.5, 1.0])]
    assert [shade(v) for v in (None, 0.0, 0.01, 0.2, 0.21, 0.5, 0.99, 1.0)] == [
        "qn",
        "q0",
        "q1",
        "q1",
        "q2",
        "q3",
        "q5",
        "q5",
    ]


def test_a_pair_found_by_two_methods_is_one_link() -> None:
    a, b, c = "pa", "pb", "pc"
    assert len(linked_pairs([(a, b), (b, a), (a, c)])) == 2


def review_rows(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<tr data-left="(p[0-9a-f]{32})" data-right="(p[0-9a-f]{32})">', html)


def links(app: FastAPI, job: int) -> dict[tuple[str, str], str]:
    text = (job_dir(app.state.application.settings, job) / "reports" / "links.csv").read_text()
    return {
        tuple(sorted((r["left"], r["right"]))): f"{r['method']} {r['taken']}"  # type: ignore[misc]
        for r in csv.DictReader(io.StringIO(text))
    }


@pytest.mark.slow
def test_decide_in_the_page_and_the_next_build_honours_it(app: FastAPI, tmp_path: Path) -> None:
    with TestClient(app, follow_redirects=False) as client:
        csrf = sign_in(client, "registry")
        empty = client.get("/ui/registries/net")
        assert "<h1>Registry: Test network registry (synthetic)</h1>" in empty.text
        assert "Not built yet" in empty.text
        started = client.post("/ui/registries/net/build", data={"csrf": csrf})
        first = int(started.headers["location"].rsplit("/", 1)[1])
        run_jobs(app)
        page = client.get("/ui/registries/net").text
        assert app.state.cache.get_run(first).status == "succeeded"
        # the result table, titled with the registry's name; S1/S2 linked once
        assert "<caption>Test network registry (synthetic)</caption>" in page
        assert re.search(r'<td id="linked">1</td>', page)
        # completeness as a heat map, each value written in its cell
        assert re.search(
            r'<th scope="row">cart_infusion</th><td class="q4">75%</td>'
            r'<td class="q5">100%</td>',
            page,
        )
        # the conflict with the rule that chose
        conflict = (
            r"<td>cart_infusion</td><td>berlin: day \+212 from diagnosis; london: "
            r"day \+214 .*</td><td>prefer treating</td><td>london</td>"
        )
        assert re.search(conflict, page)
        # the review queue: two pairs, encoded evidence only
        queue = review_rows(page)
        assert len(queue) == 2
        assert "diagnosis_date: one character off" in page
        for clear in ("N1", "M2", "2014", "2020-05", "10.06"):
            assert clear not in page
        confirm, refuse = (tuple(sorted(p)) for p in queue)
        for pair, decision in ((confirm, "link"), (refuse, "no-link")):
            answer = client.post(
                "/ui/registries/net/decide",
                data={"csrf": csrf, "left": pair[0], "right": pair[1], "decision": decision},
            )
            assert answer.status_code == 303
        decided = client.get("/ui/registries/net").text
        assert decided.count("by rui at ") == 2
        kept = read_decisions(tmp_path / "data" / "registries" / "net" / "decisions.csv")
        assert {p: (d.link, d.by) for p, d in kept.items()} == {
            confirm: (True, "rui"),
            refuse: (False, "rui"),
        }
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", d.when) for d in kept.values())
        assert links(app, first).keys() & {confirm, refuse} == set()  # neither linked yet

        again = client.post("/ui/registries/net/build", data={"csrf": csrf})
        second = int(again.headers["location"].rsplit("/", 1)[1])
        run_jobs(app)
        rebuilt = client.get("/ui/registries/net").text
    assert app.state.cache.get_run(second).status == "succeeded"
    taken = links(app, second)
    assert taken[confirm] == "decided yes"
    assert refuse not in taken
    assert review_rows(rebuilt) == []
    assert re.search(r'<td id="linked">2</td>', rebuilt)
