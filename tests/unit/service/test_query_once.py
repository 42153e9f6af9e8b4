"""A single-valued query parameter given twice is refused on every route (422 naming it
and the fix), never read as its last value: which one was meant cannot be told. Which
parameters take one value is read from each route's declared parameters (its own and its
dependencies'), so a new route is covered without being listed anywhere."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Query
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fhir_cart.service.app import create_app
from fhir_cart.service.deps import single_values
from fhir_cart.settings import Settings

KEY = {"X-API-Key": "admin-key-0123456789abcdef0123456789"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    tmp = tmp_path_factory.mktemp("query-once")
    settings = Settings(
        data_dir=tmp / "data",
        cache_url=f"sqlite:///{tmp / 'cache.sqlite'}",
        api_keys=[SecretStr(KEY["X-API-Key"])],
    )
    return create_app(settings, run_workers=False)


def _api_routes(routes: Sequence[Any]) -> Iterator[tuple[str, APIRoute]]:
    """Every API route of the app, also those of included routers (FastAPI keeps an
    included router as one entry of ``app.routes``)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            prefix = route.include_context.prefix
            yield from ((prefix + p, r) for p, r in _api_routes(included.routes))
        elif isinstance(route, APIRoute):
            yield route.path, route


def _query_fields(dependant: Dependant) -> Iterator[tuple[str, Any]]:
    yield from ((f.alias, f.field_info.annotation) for f in dependant.query_params)
    for sub in dependant.dependencies:
        yield from _query_fields(sub)


def _is_list(annotation: Any) -> bool:
    text = str(annotation)
    return text.startswith(("list[", "set[", "tuple[", "typing.List", "typing.Sequence"))


def test_every_single_valued_query_parameter_of_every_route_is_refused_twice(
    app: FastAPI,
) -> None:
    tried: set[tuple[str, str, str]] = set()
    with TestClient(app, follow_redirects=False) as client:
        for path, route in _api_routes(app.routes):
            concrete = re.sub(r"\{[^}]+\}", "1", path)
            for name, annotation in _query_fields(route.dependant):
                assert not _is_list(annotation), (path, name)  # none yet: see the test below
                for method in sorted(route.methods - {"HEAD"}):
                    answer = client.request(method, f"{concrete}?{name}=1&{name}=2", headers=KEY)
                    assert answer.status_code == 422, (method, path, name, answer.text)
                    text = html.unescape(answer.text)
                    assert f"query parameter '{name}' given more than once" in text, text
                    assert "give it once" in text
                    tried.add((method, path, name))
    names = {(path, name) for _, path, name in tried}
    # never vacuous: the routes the check was first written for, and those it now covers
    assert {
        ("/mappings", "owner"),
        ("/mappings/{name}", "owner"),
        ("/mappings/{name}", "version"),
        ("/jobs/{job_id:int}/export", "format"),
        ("/jobs", "limit"),
        ("/cache/resources", "direction"),
    } <= names, sorted(names)
    assert len(tried) >= 12


def test_a_parameter_given_once_and_two_different_parameters_pass(app: FastAPI) -> None:
    with TestClient(app) as client:
        assert client.get("/jobs?limit=5&offset=0", headers=KEY).status_code == 200
        answer = client.get("/jobs?limit=5&limit=6&offset=0&offset=1", headers=KEY)
        assert answer.status_code == 422
        assert "query parameter 'limit', 'offset' given more than once" in answer.json()["detail"]
        assert "give each once" in answer.json()["detail"]


def _listed(
    tags: Annotated[list[str], Query()],
    page: Annotated[int, Query()] = 1,
) -> dict[str, Any]:
    return {"tags": tags, "page": page}


def _paged(limit: Annotated[int, Query()] = 10) -> int:
    return limit


def test_a_list_parameter_may_repeat_and_a_dependencys_parameter_may_not() -> None:
    """Derived from the declarations: ``list[str]`` takes many values; a parameter that
    only a dependency declares is single-valued all the same."""
    app = FastAPI(dependencies=[Depends(single_values)])
    app.get("/listed")(_listed)

    @app.get("/paged")
    def paged(limit: Annotated[int, Depends(_paged)]) -> int:
        return limit

    with TestClient(app) as client:
        answer = client.get("/listed?tags=a&tags=b&page=2")
        assert answer.json() == {"tags": ["a", "b"], "page": 2}
        assert client.get("/listed?tags=a&page=2&page=3").status_code == 422
        assert client.get("/paged?limit=3").json() == 3
        answer = client.get("/paged?limit=3&limit=4")
        assert answer.status_code == 422
        assert "'limit'" in answer.json()["detail"]
