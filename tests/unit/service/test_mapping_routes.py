"""Kept mapping files and the mapping assistant's pages (issue 22): every pair of roles over
every new route, through the API and the pages. A centre sees only its own mappings and
uploads (another centre's answer 404, as if they did not exist); the registry role has no
use for a centre's mapping (403); admins see every owner's. A mapping that does not check
is a problem document naming the key, line and fix."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fhir_cart.service.access import hash_password
from fhir_cart.service.app import create_app
from fhir_cart.settings import Settings, UserSettings
from tests.support import ROOT
from tests.support.pages import checked
from tests.support.study_library import STUDY_LIBRARY

KEYS = {
    "admin": "admin-key-0123456789abcdef0123456789",
    "centre_a": "centre-a-key-0123456789abcdef012345",
    "centre_b": "centre-b-key-0123456789abcdef012345",
    "registry": "registry-key-0123456789abcdef01234",
}
ROLES = tuple(KEYS)
OWNERS = {"admin": "admin", "centre_a": "centre_a", "centre_b": "centre_b"}
PASSWORD = "a long synthetic password"
GOOD = b"centre: kh-nord\npatients:\n  columns: {study_id: Pat-Nr}\n"
TABLE = ROOT / "fixtures" / "centre_b" / "centre_b.csv"


def headers(role: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[role]}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("mapping-routes")
    hashed = SecretStr(hash_password(PASSWORD))
    settings = Settings(
        data_dir=tmp / "data",
        cache_url=f"sqlite:///{tmp / 'cache.sqlite'}",
        api_keys=[SecretStr(KEYS["admin"])],
        users=[
            UserSettings(
                name="a",
                role="centre",
                centre="centre_a",
                api_key=SecretStr(KEYS["centre_a"]),
                password_hash=hashed,
            ),
            UserSettings(
                name="b",
                role="centre",
                centre="centre_b",
                api_key=SecretStr(KEYS["centre_b"]),
                password_hash=hashed,
            ),
            UserSettings(
                name="reg",
                role="registry",
                api_key=SecretStr(KEYS["registry"]),
                password_hash=hashed,
            ),
        ],
    )
    with TestClient(create_app(settings, run_workers=False)) as made:
        for role in OWNERS:
            answer = post_mapping(made, role, "kohorte", GOOD)
            assert answer.status_code == 201, answer.text
        yield made


def post_mapping(client: TestClient, role: str, name: str, text: bytes) -> Any:
    return client.post(f"/mappings/{name}", headers=headers(role), files={"file": ("m.yaml", text)})


def test_the_registry_role_keeps_no_mapping(client: TestClient) -> None:
    assert post_mapping(client, "registry", "kohorte", GOOD).status_code == 403
    assert client.get("/mappings", headers=headers("registry")).status_code == 403
    fetched = client.get("/mappings/kohorte?owner=centre_a", headers=headers("registry"))
    assert fetched.status_code == 403


@pytest.mark.parametrize("reader", ["admin", "centre_a", "centre_b"])
def test_a_list_holds_what_the_reader_may_see(client: TestClient, reader: str) -> None:
    listed = client.get("/mappings", headers=headers(reader)).json()
    owners = {m["owner"] for m in listed}
    assert owners == (set(OWNERS.values()) if reader == "admin" else {reader})


@pytest.mark.parametrize("owner", ["admin", "centre_a", "centre_b"])
@pytest.mark.parametrize("reader", ["admin", "centre_a", "centre_b"])
def test_every_pair_of_roles_fetching_a_mapping(
    client: TestClient, owner: str, reader: str
) -> None:
    answer = client.get(f"/mappings/kohorte?owner={owner}&version=1", headers=headers(reader))
    if reader in ("admin", owner):
        assert answer.status_code == 200
        assert answer.content == GOOD
        assert answer.headers["content-type"].startswith("application/yaml")
    else:
        assert answer.status_code == 404  # as if it did not exist


def test_a_new_upload_is_the_next_version(client: TestClient) -> None:
    again = post_mapping(client, "centre_b", "zweite", GOOD)
    then = post_mapping(client, "centre_b", "zweite", GOOD + b"date_formats: ['%d.%m.%Y']\n")
    assert (again.json()["version"], then.json()["version"]) == (1, 2)
    latest = client.get("/mappings/zweite", headers=headers("centre_b"))
    assert b"date_formats" in latest.content
    first = client.get("/mappings/zweite?version=1", headers=headers("centre_b"))
    assert first.content == GOOD


def test_an_invalid_mapping_is_a_problem_naming_key_line_and_fix(client: TestClient) -> None:
    answer = post_mapping(client, "centre_a", "kaputt", GOOD + b"colour: red\n")
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["errors"] == [
        {
            "key": "colour",
            "reason": "Extra inputs are not permitted",
            "line": 4,
            "value": "'red'",
            "fix": "remove the key, or correct its spelling",
        },
    ]
    assert "mapping 'kaputt'" in problem["detail"]
    listed = client.get("/mappings", headers=headers("centre_a")).json()
    assert "kaputt" not in {m["name"] for m in listed}


# -- the pages ------------------------------------------------------------------------------


def sign_in(client: TestClient, user: str) -> str:
    """A page session for ``user`` (cookies on the client); its CSRF token."""
    client.cookies.clear()
    page = client.get("/ui/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    form = {"csrf": token.group(1), "user": user, "password": PASSWORD}
    assert client.post("/ui/login", data=form, follow_redirects=False).status_code == 303
    home = client.get("/ui/")
    csrf = re.search(r'"X-CSRF-Token": "([^"]+)"', home.text)
    assert csrf is not None
    return csrf.group(1)


def upload_to_map(client: TestClient, csrf: str) -> str:
    with TABLE.open("rb") as handle:
        files = {"file": ("kohorte.csv", handle)}
        answer = client.post(
            "/ui/assistant", data={"csrf": csrf}, files=files, follow_redirects=False
        )
    assert answer.status_code == 303, answer.text
    found = re.match(r"/ui/uploads/([0-9a-f]{32})/assistant$", answer.headers["location"])
    assert found is not None
    return found.group(1)


def form_as_shown(page: str) -> dict[str, str]:
    """The assistant's form as a person who changes nothing sends it."""
    form = dict(re.findall(r'<input type="hidden" name="(wv[^"]+)" value="([^"]*)"', page))
    selects = r'<select id="[^"]+" name="([^"]+)"[^>]*>(.*?)</select>'
    for name, options in re.findall(selects, page, re.S):
        chosen = re.search(r'<option value="([^"]*)"[^>]* selected', options)
        form[name] = chosen.group(1) if chosen else ""
    return form


def test_the_assistant_writes_a_kept_mapping_and_checks_the_file(client: TestClient) -> None:
    csrf = sign_in(client, "b")
    upload_id = upload_to_map(client, csrf)
    page = client.get(f"/ui/uploads/{upload_id}/assistant")
    assert page.status_code == 200
    assert "Blinatumomab" in page.text  # the library's label
    assert "rxnorm 1597258" in page.text  # and codes
    assert 'class="unsure"' in page.text  # columns left for the person are marked
    form = form_as_shown(page.text) | {"csrf": csrf, "name": "assistiert", "study": "seed"}
    answer = client.post(f"/ui/uploads/{upload_id}/assistant", data=form, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/ui/uploads/{upload_id}"
    check = checked(client, upload_id)  # checked again, in the background
    assert "assistiert-v1" in check.text
    assert "No problems found." in check.text
    kept = client.get("/mappings/assistiert?version=1", headers=headers("centre_b"))
    assert kept.status_code == 200
    assert b"study: seed" in kept.content
    # the retarget fragment: the words of the concept the person picks
    url = f"/ui/uploads/{upload_id}/assistant/columns/14?t14=concept:disease_status"
    fragment = client.get(url)
    assert 'name="f14"' in fragment.text
    assert "complete_remission" in fragment.text


def test_a_form_without_its_token_changes_nothing(client: TestClient) -> None:
    csrf = sign_in(client, "b")
    upload_id = upload_to_map(client, csrf)
    before = client.get("/mappings", headers=headers("centre_b")).json()
    answer = client.post(f"/ui/uploads/{upload_id}/assistant", data={"name": "x"})
    assert answer.status_code == 403
    assert client.get("/mappings", headers=headers("centre_b")).json() == before
    with TABLE.open("rb") as handle:
        refused = client.post("/ui/assistant", files={"file": ("k.csv", handle)})
    assert refused.status_code == 403


def test_pages_of_another_centre_answer_404(client: TestClient) -> None:
    upload_id = upload_to_map(client, sign_in(client, "b"))
    sign_in(client, "a")
    assert client.get(f"/ui/uploads/{upload_id}/assistant").status_code == 404
    assert client.get(f"/ui/uploads/{upload_id}/assistant/columns/0").status_code == 404
    assert client.get("/ui/mappings/centre_b/kohorte/1").status_code == 404
    assert client.get("/ui/mappings/centre_a/kohorte/1").status_code == 200
    listing = client.get("/ui/mappings").text
    assert "/ui/mappings/centre_a/kohorte/1" in listing
    assert "centre_b" not in listing


def test_the_registry_role_has_no_assistant(client: TestClient) -> None:
    sign_in(client, "reg")
    assert client.get("/ui/assistant").status_code == 403
    assert client.get("/ui/mappings").status_code == 403


def test_a_405_names_every_method_of_the_path(client: TestClient) -> None:
    """`GET` and `POST /mappings/{name}` are two routes: a 405 on the path lists both in
    `Allow` (starlette names the first route's only; the API contract test caught it)."""
    answer = client.request("OPTIONS", "/mappings/x", headers=headers("admin"))
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, POST"
    answer = client.request("DELETE", "/uploads", headers=headers("admin"))
    assert answer.status_code == 405
    assert "DELETE" not in answer.headers["allow"]
    assert "POST" in answer.headers["allow"]


def test_a_query_parameter_given_twice_is_refused(client: TestClient) -> None:
    """Which owner was meant by `owner=a&owner=b` cannot be told (the API contract test
    sent one such request and it was answered with the last one's list)."""
    for path in ("/mappings?owner=centre_a&owner=centre_b", "/mappings/x?version=1&version=2"):
        answer = client.get(path, headers=headers("admin"))
        assert answer.status_code == 422, path
        assert "given more than once" in answer.json()["detail"]
    assert client.get("/mappings?owner=centre_a", headers=headers("admin")).status_code == 200


STUDY_TABLE = b"""\
id,sex,infusion,response,bridging
P1,f,2021-01-10,MRD-neg NGS,bridged
P2,m,2021-02-11,CR,bridged
P3,f,2021-03-12,MRD-neg NGS,none
"""


def test_with_a_study_library_the_assistant_suggests_its_words_and_keeps_them_inline(
    client: TestClient,
) -> None:
    """The study's library file given with the table: its concept and its added word are
    suggested like shipped ones, and the kept mapping carries them (it stands alone)."""
    csrf = sign_in(client, "b")
    files = {
        "file": ("myeloma.csv", STUDY_TABLE),
        "library": ("study.yaml", STUDY_LIBRARY.encode()),
    }
    answer = client.post("/ui/assistant", data={"csrf": csrf}, files=files, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    upload_id = answer.headers["location"].split("/")[3]
    page = client.get(f"/ui/uploads/{upload_id}/assistant")
    assert "Note on bridging therapy" in page.text
    # every column's list offers the study's concept, as the anchor list does
    assert page.text.count('<option value="concept:bridging_note"') >= 6  # and anchor's
    assert re.search(r'<option value="sequencing_mrd_negative"[^>]* selected', page.text)
    form = form_as_shown(page.text) | {"csrf": csrf, "name": "myeloma"}
    answer = client.post(f"/ui/uploads/{upload_id}/assistant", data=form, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    kept = client.get("/mappings/myeloma?version=1", headers=headers("centre_b")).text
    assert "canonical: https://example.org/fhir/myeloma-study" in kept
    assert "mrd-neg ngs: sequencing_mrd_negative" in kept
    assert "concept: bridging_note" in kept
    # a library file that does not check is refused with its own name and the reason
    bad = {"file": ("m.csv", STUDY_TABLE), "library": ("mine.yaml", b"units: {Mio/L: {}}\n")}
    refused = client.post("/ui/assistant", data={"csrf": csrf}, files=bad)
    assert refused.status_code == 422
    said = html.unescape(refused.text)
    assert "library file mine.yaml is refused: units.Mio/L: 'Mio/L' is not a UCUM unit" in said
    assert "library.yaml" not in said  # where the service keeps it is not shown
