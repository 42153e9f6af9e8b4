"""Inputs that ended as "internal error (ClassName)" or a bare 500: each is now a clear
error naming what and where and the fix, in the CLI and in the service alike."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import respx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fhir_cart.auth import MAX_AUTH_ANSWER, ClientCredentials, SmartBackendServices
from fhir_cart.cache import open_cache
from fhir_cart.cli import main
from fhir_cart.client import bundle_links, entry_results
from fhir_cart.errors import AuthError, BadResponse, ConfigError
from fhir_cart.service.app import create_app
from fhir_cart.settings import AuthSettings, ServerSettings, Settings
from tests.support import CENTRE_B_FILE, MAPPINGS, ROOT, SEED_FILE

KEY = {"X-API-Key": "bad-inputs-key-0123456789abcdef0123"}


def _centre_b(cell: str) -> bytes:
    """centre_b.csv with its first patient's birth date replaced by ``cell``."""
    header, row = CENTRE_B_FILE.read_text(encoding="utf-8").splitlines()[:2]
    cells = row.split(",")
    cells[2] = cell
    return f"{header}\n{','.join(cells)}\n".encode()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _seed_with(change: Callable[[str, bytes], bytes]) -> bytes:
    with zipfile.ZipFile(SEED_FILE) as archive:
        return _zip({m: change(m, archive.read(m)) for m in archive.namelist()})


def _doctype(name: str, data: bytes) -> bytes:
    if name != "xl/workbook.xml":
        return data
    return b'<!DOCTYPE w [<!ENTITY a "aaaaaaaa">]>' + data


def _bomb(name: str, data: bytes) -> bytes:
    """The seed workbook with a first sheet holding a 30 MB cell: valid XML that packs
    1,000 times (the probe's bomb: 437 KB packed, 97 MB of sheet)."""
    if name != "xl/worksheets/sheet1.xml":
        return data
    head, _, tail = data.partition(b"</sheetData>")
    row = b'<row r="9999"><c r="A9999" t="inlineStr"><is><t>' + b"x" * 30_000_000
    return head + row + b"</t></is></c></row></sheetData>" + tail


SEED = SEED_FILE.read_bytes()
# (name, content, mapping, service status, words the message must hold)
STUDY_FILES = [
    ("field.csv", _centre_b("x" * 200_000), "centre_b", 422, ["line 2", "field larger"]),
    ("line.csv", _centre_b("y" * 5_000_000), "centre_b", 422, ["line 2", "unclosed quote"]),
    ("notzip.xlsx", b"PK? no, plain text", "seed", 422, ["not an .xlsx workbook", "save it"]),
    ("cut.xlsx", SEED[: len(SEED) // 2], "seed", 422, ["cut short", "save it"]),
    ("empty.xlsx", _zip({"a.txt": b"hi"}), "seed", 422, ["no xl/workbook.xml", "save it"]),
    ("dtd.xlsx", _seed_with(_doctype), "seed", 422, ["xl/workbook.xml declares a DTD"]),
    ("bomb.xlsx", _seed_with(_bomb), "seed", 413, ["sheet1.xml unpacks to", "zip bomb"]),
]


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("name", "content", "mapping", "status", "words"), STUDY_FILES, ids=[f[0] for f in STUDY_FILES]
)
def test_a_bad_study_file_is_a_clear_error_in_the_cli(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes,
    mapping: str,
    status: int,
    words: list[str],
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    mapping_file = MAPPINGS / "centres" / f"{mapping}.yaml"
    code = main(["map", str(path), "--mapping", str(mapping_file), "-o", str(tmp_path / "o")])
    err = _flat(capsys.readouterr().err)
    assert code == 3, err  # an input error (docs/cli.md), not 70
    assert f"error: {name}:" in err
    for word in words:
        assert word in err
    assert str(tmp_path) not in err  # the file's name, never the server's folders


@pytest.fixture
def service(tmp_path: Path) -> Iterator[FastAPI]:
    settings = Settings(
        data_dir=tmp_path / "data",
        api_keys=[SecretStr(KEY["X-API-Key"])],
        cache_url=f"sqlite:///{tmp_path / 'c.sqlite'}",
    )
    app = create_app(settings, run_workers=False)
    app.state.cache = open_cache(settings.effective_cache_url())
    yield app
    app.state.cache.close()


@pytest.mark.parametrize(
    ("name", "content", "mapping", "status", "words"), STUDY_FILES, ids=[f[0] for f in STUDY_FILES]
)
def test_a_bad_study_file_is_a_clear_error_in_the_service(
    service: FastAPI,
    tmp_path: Path,
    name: str,
    content: bytes,
    mapping: str,
    status: int,
    words: list[str],
) -> None:
    with TestClient(service) as client:
        answer = client.post(
            "/uploads", headers=KEY, data={"mapping": mapping}, files={"file": (name, content)}
        )
    detail = answer.json()["detail"]
    assert answer.status_code == status, detail
    stored = "study" + Path(name).suffix  # the service names the file it stores, not the client
    assert detail.startswith(f"{stored}:")
    for word in words:
        assert word in detail
    assert str(tmp_path) not in detail


def test_a_bundle_link_that_is_not_a_list_is_a_bad_response() -> None:
    for link in ("next", {"relation": "next"}, ["next"]):
        with pytest.raises(BadResponse, match="'link' that is not a list of links"):
            bundle_links({"resourceType": "Bundle", "link": link})
    assert bundle_links({"resourceType": "Bundle"}) == []


def test_an_entry_status_that_is_not_an_http_code_names_the_entry() -> None:
    good = {"response": {"status": "201 Created"}}
    plain = {"response": {"status": "200"}}
    assert [r.status for r in entry_results({"entry": [good, plain]})] == [201, 200]
    with pytest.raises(BadResponse, match=r"entry 2 .* response.status 'OK', not an HTTP"):
        entry_results({"entry": [good, {"response": {"status": "OK"}}]})


@respx.mock
async def test_a_smart_configuration_without_token_endpoint_says_what_to_set() -> None:
    respx.get("https://fhir.test/r4/.well-known/smart-configuration").mock(
        return_value=httpx.Response(200, json={"grant_types_supported": ["client_credentials"]})
    )
    auth = SmartBackendServices(client_id="c", private_key_pem=SecretStr("unused"))
    async with httpx.AsyncClient() as http:
        with pytest.raises(AuthError, match=r"names no token_endpoint.*token_url"):
            await auth.headers(http, "https://fhir.test/r4")


@respx.mock
async def test_oversized_smart_and_token_answers_are_refused() -> None:
    huge = b'{"token_endpoint": "https://a.test/t", "pad": "' + b"x" * MAX_AUTH_ANSWER + b'"}'
    respx.get("https://fhir.test/r4/.well-known/smart-configuration").mock(
        return_value=httpx.Response(200, content=huge)
    )
    token = b'{"access_token": "' + b"t" * MAX_AUTH_ANSWER + b'"}'
    respx.post("https://a.test/t").mock(return_value=httpx.Response(200, content=token))
    smart = SmartBackendServices(client_id="c", private_key_pem=SecretStr("unused"))
    credentials = ClientCredentials(
        token_url="https://a.test/t", client_id="c", client_secret=SecretStr("s")
    )
    async with httpx.AsyncClient() as http:
        with pytest.raises(AuthError, match="smart-configuration answered with more than"):
            await smart.headers(http, "https://fhir.test/r4")
        with pytest.raises(AuthError, match="token endpoint answered with more than"):
            await credentials.headers(http, "https://fhir.test/r4")


def test_pull_patients_from_a_missing_file_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "pull",
            "--patients",
            str(tmp_path / "missing.txt"),
            "--server",
            "http://127.0.0.1:9/fhir",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = _flat(capsys.readouterr().err)
    assert code == 2, err
    assert "--patients missing.txt: no such file; give a UTF-8 text file" in err
    assert str(tmp_path) not in err


@pytest.mark.parametrize("group", ["..", ".", "../Patient", "a/b", "x" * 65])
def test_a_group_id_that_is_not_a_fhir_id_is_refused_everywhere(
    group: str, tmp_path: Path, service: FastAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    """``Group/../$export`` is the system-wide ``$export``: never sent."""
    code = main(
        [
            "pull",
            "--group",
            group,
            "--server",
            "http://127.0.0.1:9/fhir",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "--group" in capsys.readouterr().err
    with TestClient(service) as client:
        body = {"server": "h", "selection": "group", "group_id": group}
        answer = client.post("/jobs/pull", headers=KEY, json=body)
    assert answer.status_code == 422, answer.text
    assert "group_id" in answer.json()["detail"]


async def test_the_client_never_puts_a_dot_segment_id_in_a_path() -> None:
    from fhir_cart.client import FhirClient

    async with FhirClient(base_url="http://127.0.0.1:9/fhir", max_retries=0) as client:
        with pytest.raises(ConfigError, match="only dots"):
            await client.read("Group", "..")
        with pytest.raises(ConfigError, match="only dots"):
            await client.export_manifest(group_id="..")


@respx.mock
async def test_an_undeclared_oversized_answer_is_cut_off_while_it_streams() -> None:
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        yield b'{"token_endpoint": "https://a.test/t", "pad": "'
        for _ in range(64):  # 4 MiB without a Content-Length
            sent.append(1)
            yield b"x" * 65536

    respx.get("https://fhir.test/r4/.well-known/smart-configuration").mock(
        return_value=httpx.Response(200, content=endless())
    )
    smart = SmartBackendServices(client_id="c", private_key_pem=SecretStr("unused"))
    async with httpx.AsyncClient() as http:
        with pytest.raises(AuthError, match="smart-configuration answered with more than"):
            await smart.headers(http, "https://fhir.test/r4")
    assert len(sent) <= MAX_AUTH_ANSWER // 65536 + 1


def test_errors_name_files_relative_to_the_data_folder_not_by_server_path(
    service: FastAPI, tmp_path: Path
) -> None:
    from fhir_cart.errors import InputError
    from fhir_cart.service.jobs import _safe_error

    patients = (ROOT / "fixtures" / "adult_cart" / "patients.csv").read_bytes()
    with TestClient(service) as client:  # a mapping of four CSVs, one uploaded
        answer = client.post(
            "/uploads",
            headers=KEY,
            data={"mapping": "adult_cart"},
            files={"file": ("patients.csv", patients)},
        )
    detail = answer.json()["detail"]
    assert answer.status_code == 422, detail
    assert detail.startswith("uploads/")
    assert "file named in the mapping is missing" in detail
    assert str(tmp_path) not in detail
    app = service.state.application
    mapping = app.mapping_file("seed")
    error = InputError(f"{app.settings.data_dir / 'jobs' / '7' / 'x.csv'} and {mapping}", [])
    assert _safe_error(error, app) == "jobs/7/x.csv and mappings/centres/seed.yaml"


def test_the_data_folder_uploads_and_cache_are_the_owners_only(tmp_path: Path) -> None:
    import os
    import stat

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    old = os.umask(0o022)  # a usual umask: without care, folders 0755 and files 0644
    try:
        shared = tmp_path / "shared"
        shared.mkdir()
        os.chmod(shared, 0o755)
        data = shared / "data"
        settings = Settings(data_dir=data, api_keys=[SecretStr(KEY["X-API-Key"])])
        with TestClient(create_app(settings, run_workers=False)) as client:
            answer = client.post(
                "/uploads",
                headers=KEY,
                data={"mapping": "centre_b"},
                files={"file": ("b.csv", CENTRE_B_FILE.read_bytes())},
            )
            assert answer.status_code == 201, answer.text
        (upload,) = (data / "uploads").iterdir()
        assert [mode(p) for p in (data, data / "uploads", upload)] == [0o700] * 3
        assert {p.name: mode(p) for p in upload.iterdir()} == {
            "study.csv": 0o600,
            "meta.json": 0o600,
        }
        assert mode(data / "cache.sqlite") == 0o600
        wide = tmp_path / "wide"
        wide.mkdir(mode=0o755)
        os.chmod(wide, 0o755)
        with TestClient(
            create_app(settings.model_copy(update={"data_dir": wide}), run_workers=False)
        ):
            pass
        assert mode(wide) == 0o700  # an existing data folder is tightened at start-up
        assert mode(shared) == 0o755  # what the service did not create is left alone
    finally:
        os.umask(old)


def test_uploads_expire_after_their_ttl(service: FastAPI) -> None:
    import os
    import time

    settings = service.state.application.settings
    assert settings.upload_ttl_hours == 24

    def upload(client: TestClient) -> str:
        answer = client.post(
            "/uploads",
            headers=KEY,
            data={"mapping": "centre_b"},
            files={"file": ("b.csv", CENTRE_B_FILE.read_bytes())},
        )
        assert answer.status_code == 201, answer.text
        upload_id: str = answer.json()["upload_id"]
        return upload_id

    def age(upload_id: str, hours: float) -> None:
        then = time.time() - hours * 3600
        os.utime(settings.data_dir / "uploads" / upload_id, (then, then))

    with TestClient(service) as client:
        old, young = upload(client), upload(client)
        age(old, 24.1)
        age(young, 23.9)
        fresh = upload(client)  # each upload first clears the expired ones
        assert client.get(f"/uploads/{old}/preview", headers=KEY).status_code == 404
        for kept in (young, fresh):
            assert client.get(f"/uploads/{kept}/preview", headers=KEY).status_code == 200
        age(young, 25)
    with TestClient(service) as client:  # and the service, at start-up
        time.sleep(0.2)
        assert client.get(f"/uploads/{young}/preview", headers=KEY).status_code == 404
        assert client.get(f"/uploads/{fresh}/preview", headers=KEY).status_code == 200


# -- servers answering what is not FHIR: the CLI and a service job say so -------------------

FAKE = "https://fhir.test/r4"
_TYPES = [
    "Patient",
    "Observation",
    "Condition",
    "Procedure",
    "MedicationAdministration",
    "MedicationRequest",
    "AdverseEvent",
    "Encounter",
    "Group",
]
_CAPABILITIES = {
    "resourceType": "CapabilityStatement",
    "status": "active",
    "kind": "instance",
    "fhirVersion": "4.0.1",
    "format": ["json"],
    "rest": [
        {
            "mode": "server",
            "interaction": [{"code": "transaction"}],
            "resource": [
                {
                    "type": t,
                    "interaction": [{"code": c} for c in ("read", "search-type", "update")],
                    "searchParam": [
                        {"name": n, "type": "token"} for n in ("identifier", "patient", "_id")
                    ],
                }
                for t in _TYPES
            ],
        }
    ],
}


def _not_fhir(request: httpx.Request) -> httpx.Response:
    """Searches answer a Bundle whose ``link`` is a string; transactions answer entries
    whose status is 'OK'."""
    import orjson

    if request.url.path.endswith("/.well-known/smart-configuration"):
        return httpx.Response(200, json={"capabilities": ["client-confidential-asymmetric"]})
    if request.url.path.endswith("/metadata"):
        return httpx.Response(200, json=_CAPABILITIES)
    if request.method == "GET":
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "searchset", "link": "next", "entry": []}
        )
    entries = [{"response": {"status": "OK"}} for _ in orjson.loads(request.content)["entry"]]
    return httpx.Response(
        200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
    )


SERVER_ANSWERS = [
    ("pull", "the server's Bundle has a 'link' that is not a list of links"),
    ("push", "entry 1 of the server's answer has response.status 'OK'"),
    ("smart", "the server's /.well-known/smart-configuration names no token_endpoint"),
]


def _fake_server(command: str, tmp_path: Path) -> ServerSettings:
    """The fake server in settings; for ``smart``, with SMART Backend Services credentials
    (the key is never used: discovery fails first)."""
    if command != "smart":
        return ServerSettings(base_url=FAKE, max_retries=0)
    key = tmp_path / "key.pem"
    key.write_text("not used")
    auth = AuthSettings(type="smart_backend", client_id="c", private_key_file=key)
    return ServerSettings(base_url=FAKE, max_retries=0, auth=auth)


@pytest.mark.parametrize(("command", "words"), SERVER_ANSWERS)
def test_a_server_answer_that_is_not_fhir_is_a_clear_error_in_the_cli(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    words: str,
) -> None:
    cache = ["--cache", f"sqlite:///{tmp_path / 'c.sqlite'}"]
    pull = ["pull", "--search", "identifier=x|", "--out", str(tmp_path / "o")]
    args = {
        "pull": pull,
        "smart": pull,
        "push": ["push", str(SEED_FILE), "-m", str(MAPPINGS / "centres" / "seed.yaml")],
    }[command]
    config = tmp_path / "fhir-cart.yaml"
    server = _fake_server(command, tmp_path).model_dump(mode="json", exclude_defaults=True)
    config.write_bytes(orjson.dumps({"servers": {"fake": server}}))  # JSON is YAML
    monkeypatch.setenv("FHIR_CART_CONFIG", str(config))
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="fhir.test").mock(side_effect=_not_fhir)
        code = main([*args, "--server", "fake", *cache])
    err = _flat(capsys.readouterr().err)
    assert code == 6, err  # the server cannot be used (docs/cli.md), not 70
    assert f"error: the FHIR server cannot be used: {words}" in err


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@pytest.mark.parametrize(("command", "words"), SERVER_ANSWERS)
def test_a_server_answer_that_is_not_fhir_fails_the_job_with_its_reason(
    tmp_path: Path, command: str, words: str
) -> None:
    import time

    settings = Settings(
        data_dir=tmp_path / "data",
        api_keys=[SecretStr(KEY["X-API-Key"])],
        servers={"h": _fake_server(command, tmp_path)},
    )
    with respx.mock(assert_all_called=False) as mock, TestClient(create_app(settings)) as client:
        mock.route(host="fhir.test").mock(side_effect=_not_fhir)
        mock.route(host="testserver").pass_through()
        if command == "push":
            files = {"file": ("s.xlsx", SEED_FILE.read_bytes())}
            mapping = {"mapping": "seed"}
            upload = client.post("/uploads", headers=KEY, data=mapping, files=files).json()
            body: dict[str, object] = {"upload_id": upload["upload_id"], "server": "h"}
        else:
            body = {"server": "h", "selection": "search", "query": "identifier=x|"}
        kind = "pull" if command == "smart" else command
        job = client.post(f"/jobs/{kind}", headers=KEY, json=body).json()
        deadline = time.monotonic() + 120  # ends as soon as the job does; load can be high
        while job["status"] in ("pending", "running") and time.monotonic() < deadline:
            time.sleep(0.1)
            job = client.get(f"/jobs/{job['id']}", headers=KEY).json()
    assert job["status"] == "failed", job
    assert words in job["error"]


@pytest.mark.parametrize("owned_by_caller", [False, True])
def test_a_failed_pull_is_left_to_the_caller_that_made_its_run(
    tmp_path: Path, owned_by_caller: bool
) -> None:
    """A pull that fails on a bad server answer marks a run it made itself interrupted (a
    re-run resumes it); a run its caller made (a service job, which marks it failed) is left
    running for the caller, so a client polling it never sees it interrupted first."""
    import asyncio

    from fhir_cart.application import Application
    from fhir_cart.sync.jobs import PullRequest, run_pull
    from fhir_cart.sync.pull import PullSelection

    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    server = _fake_server("pull", tmp_path)
    run_id = cache.create_run(kind="pull", server=server.base_url, params={}, worker="w")
    request = PullRequest(
        PullSelection(kind="search", query="identifier=x|"),
        run_id=run_id if owned_by_caller else None,
    )
    ctx = Application(Settings(data_dir=tmp_path / "data")).pull_context()
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="fhir.test").mock(side_effect=_not_fhir)
        with pytest.raises(BadResponse):
            asyncio.run(run_pull(request, ctx=ctx, server=server, cache=cache))
    runs = {run.id: run.status for run in cache.list_runs()}
    cache.close()
    if owned_by_caller:
        assert runs[run_id] == "running"
    else:
        assert runs[run_id] == "running"  # not the pull's: it made a run of its own
        assert sorted(s for i, s in runs.items() if i != run_id) == ["interrupted"]


@pytest.mark.parametrize("owned_by_caller", [False, True])
def test_a_failed_push_is_left_to_the_caller_that_made_its_run(
    tmp_path: Path, owned_by_caller: bool
) -> None:
    """The pull's rule for a push: a push that fails on a bad server answer marks a run it
    made itself interrupted; a run its caller made (a service job, which marks it failed)
    is left running for the caller, so a client polling it never sees it interrupted first."""
    import asyncio

    from fhir_cart.application import Application

    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    server = _fake_server("push", tmp_path)
    run_id = cache.create_run(kind="push", server=server.base_url, params={}, worker="w")
    app = Application(Settings(data_dir=tmp_path / "data"))
    read = app.read(SEED_FILE, MAPPINGS / "centres" / "seed.yaml")
    push = app.push(
        read.cases,
        mapping=read.mapping,
        server=server,
        cache=cache,
        run_id=run_id if owned_by_caller else None,
    )
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="fhir.test").mock(side_effect=_not_fhir)
        with pytest.raises(BadResponse):
            asyncio.run(push)
    runs = {run.id: run.status for run in cache.list_runs()}
    cache.close()
    assert runs[run_id] == "running"  # the caller's to record, or not the push's at all
    if not owned_by_caller:
        assert sorted(s for i, s in runs.items() if i != run_id) == ["interrupted"]
