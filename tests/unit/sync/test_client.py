"""The FHIR client's behaviour on faults, table-driven with respx (no server involved)."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import orjson
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from fhir_cart.auth import BearerToken, ClientCredentials, SmartBackendServices
from fhir_cart.client import FhirClient, outcome_message
from fhir_cart.errors import (
    AuthError,
    BadResponse,
    FatalHttpError,
    ForeignOriginError,
    LimitExceeded,
    PreconditionFailed,
    RetryableError,
)

BASE = "https://fhir.test/r4"
OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [
        {
            "severity": "error",
            "code": "invalid",
            "diagnostics": "bad thing",
            "expression": ["Patient.birthDate"],
        }
    ],
}
PATIENT = {"resourceType": "Patient", "id": "1"}


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def mock() -> respx.MockRouter:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


async def _client(sleeps: Sleeps, **kw: Any) -> AsyncIterator[FhirClient]:
    async with FhirClient(base_url=BASE, sleep=sleeps, backoff=0.1, **kw) as client:
        yield client


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_retryable_status_is_retried_then_succeeds(
    mock: respx.MockRouter, sleeps: Sleeps, status: int
) -> None:
    route = mock.get("/Patient/1").mock(
        side_effect=[httpx.Response(status), httpx.Response(200, json=PATIENT)]
    )
    async with FhirClient(base_url=BASE, sleep=sleeps, backoff=0.1) as client:
        assert await client.read("Patient", "1") == PATIENT
    assert route.call_count == 2
    assert sleeps.calls == [0.1]


@pytest.mark.parametrize("status", [429, 503])
async def test_retries_give_up_with_a_retryable_error(
    mock: respx.MockRouter, sleeps: Sleeps, status: int
) -> None:
    route = mock.get("/Patient/1").mock(return_value=httpx.Response(status, json=OUTCOME))
    async with FhirClient(base_url=BASE, sleep=sleeps, max_retries=2, backoff=0.1) as client:
        with pytest.raises(RetryableError, match="bad thing") as info:
            await client.read("Patient", "1")
    assert route.call_count == 3
    assert info.value.status == status
    assert sleeps.calls == [0.1, 0.2]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, FatalHttpError),
        (404, FatalHttpError),
        (409, FatalHttpError),
        (422, FatalHttpError),
        (412, PreconditionFailed),
        (403, AuthError),
    ],
)
async def test_fatal_status_is_not_retried_and_explains_itself(
    mock: respx.MockRouter, sleeps: Sleeps, status: int, error: type[Exception]
) -> None:
    route = mock.get("/Patient/1").mock(return_value=httpx.Response(status, json=OUTCOME))
    async with FhirClient(base_url=BASE, sleep=sleeps) as client:
        with pytest.raises(error) as info:
            await client.read("Patient", "1")
    assert route.call_count == 1
    assert "error invalid: bad thing (at Patient.birthDate)" in str(info.value)
    assert sleeps.calls == []


@pytest.mark.parametrize("header", ["7", "http-date"])
async def test_retry_after_is_honoured(mock: respx.MockRouter, sleeps: Sleeps, header: str) -> None:
    value = header
    if header == "http-date":
        value = email.utils.formatdate(time.time() + 7, usegmt=True)
    mock.get("/Patient/1").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": value}),
            httpx.Response(200, json=PATIENT),
        ]
    )
    async with FhirClient(base_url=BASE, sleep=sleeps) as client:
        await client.read("Patient", "1")
    assert len(sleeps.calls) == 1
    assert 5.5 <= sleeps.calls[0] <= 7.0


async def test_timeouts_are_retried(mock: respx.MockRouter, sleeps: Sleeps) -> None:
    mock.get("/Patient/1").mock(
        side_effect=[
            httpx.ReadTimeout("slow"),
            httpx.ConnectError("down"),
            httpx.Response(200, json=PATIENT),
        ]
    )
    async with FhirClient(base_url=BASE, sleep=sleeps, backoff=0.1) as client:
        assert await client.read("Patient", "1") == PATIENT
    assert sleeps.calls == [0.1, 0.2]


async def test_a_plain_post_is_not_retried(mock: respx.MockRouter, sleeps: Sleeps) -> None:
    route = mock.post("/Patient").mock(return_value=httpx.Response(503))
    async with FhirClient(base_url=BASE, sleep=sleeps) as client:
        with pytest.raises(RetryableError):
            await client.create(PATIENT)
    assert route.call_count == 1


async def test_a_conditional_create_is_retried(mock: respx.MockRouter, sleeps: Sleeps) -> None:
    route = mock.post("/Patient").mock(
        side_effect=[httpx.Response(503), httpx.Response(201, json=PATIENT)]
    )
    async with FhirClient(base_url=BASE, sleep=sleeps) as client:
        await client.create(PATIENT, if_none_exist="identifier=a|b")
    assert route.call_count == 2
    assert route.calls[1].request.headers["If-None-Exist"] == "identifier=a|b"


async def test_401_reauthenticates_once(mock: respx.MockRouter, sleeps: Sleeps) -> None:
    token = mock.post("https://auth.test/token").mock(
        side_effect=[
            httpx.Response(200, json={"access_token": "t1", "expires_in": 3600}),
            httpx.Response(200, json={"access_token": "t2", "expires_in": 3600}),
        ]
    )
    route = mock.get("/Patient/1").mock(
        side_effect=[httpx.Response(401), httpx.Response(200, json=PATIENT)]
    )
    auth = ClientCredentials("https://auth.test/token", "study", SecretStr("s3cret"))
    async with FhirClient(base_url=BASE, auth=auth, sleep=sleeps) as client:
        assert await client.read("Patient", "1") == PATIENT
    assert token.call_count == 2
    assert route.calls[0].request.headers["Authorization"] == "Bearer t1"
    assert route.calls[1].request.headers["Authorization"] == "Bearer t2"


async def test_an_expired_token_refused_to_requests_in_flight_is_renewed_once(
    mock: respx.MockRouter, sleeps: Sleeps
) -> None:
    """A pull sends several searches at once: when the token expires, each is refused, and
    one new token serves them all."""
    token = mock.post("https://auth.test/token").mock(
        side_effect=[
            httpx.Response(200, json={"access_token": f"t{i}", "expires_in": 3600})
            for i in range(1, 6)
        ]
    )
    first: list[str] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "Bearer t1":
            first.append(request.url.path)
            await asyncio.sleep(0.05)  # all four are in flight with t1 before any answer
            return httpx.Response(401)
        return httpx.Response(200, json=PATIENT)

    mock.get(url__regex=r"/Patient/\d").mock(side_effect=answer)
    auth = ClientCredentials("https://auth.test/token", "study", SecretStr("s3cret"))
    async with FhirClient(base_url=BASE, auth=auth, sleep=sleeps) as client:
        got = await asyncio.gather(*(client.read("Patient", str(i)) for i in range(4)))
    assert got == [PATIENT] * 4
    assert len(first) == 4
    assert token.call_count == 2


async def test_401_twice_is_an_auth_error(mock: respx.MockRouter, sleeps: Sleeps) -> None:
    mock.post("https://auth.test/token").mock(
        return_value=httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
    )
    mock.get("/Patient/1").mock(return_value=httpx.Response(401))
    auth = ClientCredentials("https://auth.test/token", "study", SecretStr("s3cret"))
    async with FhirClient(base_url=BASE, auth=auth, sleep=sleeps) as client:
        with pytest.raises(AuthError):
            await client.read("Patient", "1")


async def test_token_is_cached_between_requests(mock: respx.MockRouter, sleeps: Sleeps) -> None:
    token = mock.post("https://auth.test/token").mock(
        return_value=httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
    )
    mock.get("/Patient/1").mock(return_value=httpx.Response(200, json=PATIENT))
    auth = ClientCredentials("https://auth.test/token", "study", SecretStr("s3cret"))
    async with FhirClient(base_url=BASE, auth=auth, sleep=sleeps) as client:
        await client.read("Patient", "1")
        await client.read("Patient", "1")
    assert token.call_count == 1


def _page(ids: list[str], next_url: str | None) -> dict[str, Any]:
    page: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": i}, "search": {"mode": "match"}}
            for i in ids
        ],
    }
    if next_url:
        page["link"] = [{"relation": "next", "url": next_url}]
    return page


async def test_paging_follows_relative_next_links(mock: respx.MockRouter, sleeps: Sleeps) -> None:
    second = mock.get("/Patient", params={"_count": "2", "page": "2"}).mock(
        return_value=httpx.Response(200, json=_page(["c"], None))
    )
    mock.get("/Patient", params={"_count": "2"}).mock(
        return_value=httpx.Response(200, json=_page(["a", "b"], "Patient?_count=2&page=2"))
    )
    async with FhirClient(base_url=BASE, sleep=sleeps) as client:
        got = [r["id"] async for r in client.search("Patient", {"_count": "2"})]
    assert got == ["a", "b", "c"]
    assert str(second.calls[0].request.url) == f"{BASE}/Patient?_count=2&page=2"
    assert mock.calls[0].request.headers["Prefer"] == "handling=strict"


async def test_paging_stops_on_a_next_link_cycle(
    mock: respx.MockRouter, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    loop = f"{BASE}/Patient?page=2"
    mock.get("/Patient", params={"page": "2"}).mock(
        return_value=httpx.Response(200, json=_page(["b"], loop))
    )
    mock.get("/Patient", params={"name": "x"}).mock(
        return_value=httpx.Response(200, json=_page(["a"], loop))
    )
    async with FhirClient(base_url=BASE, sleep=sleeps) as client:
        got = [r["id"] async for r in client.search("Patient", {"name": "x"})]
    assert got == ["a", "b"]
    assert "repeats" in caplog.text


async def test_stale_version_is_a_precondition_failure(
    mock: respx.MockRouter, sleeps: Sleeps
) -> None:
    route = mock.put("/Patient/1").mock(return_value=httpx.Response(412, json=OUTCOME))
    async with FhirClient(base_url=BASE, sleep=sleeps) as client:
        with pytest.raises(PreconditionFailed):
            await client.update(PATIENT, if_match='W/"1"')
    assert route.calls[0].request.headers["If-Match"] == 'W/"1"'
    assert route.call_count == 1


async def test_batch_response_reports_each_entry(mock: respx.MockRouter, sleeps: Sleeps) -> None:
    answer = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [
            {
                "response": {
                    "status": "201 Created",
                    "location": "Patient/9/_history/1",
                    "etag": 'W/"1"',
                }
            },
            {"response": {"status": "422 Unprocessable Entity", "outcome": OUTCOME}},
        ],
    }
    post = mock.post("/").mock(return_value=httpx.Response(200, json=answer))
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [{}, {}]}
    async with FhirClient(base_url=BASE, sleep=sleeps) as client:
        results = await client.transaction(bundle)
    assert b'"type":"batch"' in post.calls[0].request.content
    assert [r.status for r in results] == [201, 422]
    assert results[0].server_id == "9"
    assert results[0].version_id == "1"
    assert not results[1].ok
    assert outcome_message(results[1].outcome) == "error invalid: bad thing (at Patient.birthDate)"


async def test_smart_backend_services_discovers_and_signs(
    mock: respx.MockRouter, sleeps: Sleeps
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    mock.get("/.well-known/smart-configuration").mock(
        return_value=httpx.Response(200, json={"token_endpoint": "https://auth.test/smart"})
    )
    token = mock.post("https://auth.test/smart").mock(
        return_value=httpx.Response(200, json={"access_token": "jwt-ok", "expires_in": 300})
    )
    read = mock.get("/Patient/1").mock(return_value=httpx.Response(200, json=PATIENT))
    auth = SmartBackendServices(client_id="cart", private_key_pem=SecretStr(pem), key_id="k1")
    async with FhirClient(base_url=BASE, auth=auth, sleep=sleeps) as client:
        await client.read("Patient", "1")
    form = dict(httpx.QueryParams(token.calls[0].request.content.decode()))
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"].endswith("jwt-bearer")
    claims = jwt.decode(
        form["client_assertion"],
        key.public_key(),
        algorithms=["RS384"],
        audience="https://auth.test/smart",
    )
    assert claims["iss"] == claims["sub"] == "cart"
    assert jwt.get_unverified_header(form["client_assertion"])["kid"] == "k1"
    assert read.calls[0].request.headers["Authorization"] == "Bearer jwt-ok"


async def test_secrets_and_identifiers_stay_out_of_repr_and_logs(
    mock: respx.MockRouter, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: fhir_cart's, httpx's, httpcore's
    auth = BearerToken(SecretStr("tok-SECRET"))
    creds = ClientCredentials("https://auth.test/token", "study", SecretStr("pw-SECRET"))
    assert "SECRET" not in repr(auth) + repr(creds)
    mock.get("/Patient").mock(return_value=httpx.Response(200, json=_page([], None)))
    async with FhirClient(base_url=BASE, auth=auth, sleep=sleeps) as client:
        _ = [r async for r in client.search("Patient", {"identifier": "urn:x|MRN-4711"})]
    assert "GET /r4/Patient" in caplog.text
    assert "HTTP Request: GET /r4/Patient" in caplog.text  # httpx's own line, without query
    assert "SECRET" not in caplog.text
    assert "MRN-4711" not in caplog.text


async def test_client_refuses_use_outside_async_with() -> None:
    client = FhirClient(base_url=BASE)
    with pytest.raises(RuntimeError, match="async with"):
        await client.read("Patient", "1")


# -- trust: credentials only for the configured origin, limits, malformed answers ---------

EVIL = "https://evil.test"
TOKEN = BearerToken(SecretStr("tok-SECRET"))


@pytest.mark.parametrize(
    "next_url",
    [
        f"{EVIL}/r4/Patient?page=2",  # another host
        "http://fhir.test/r4/Patient?page=2",  # same host, plain http
        "https://fhir.test:8443/r4/Patient?page=2",  # same host, another port
        "//evil.test/r4/Patient?page=2",  # scheme-relative
    ],
)
async def test_a_next_link_to_another_origin_is_refused(
    mock: respx.MockRouter, sleeps: Sleeps, next_url: str
) -> None:
    mock.get("/Patient").mock(return_value=httpx.Response(200, json=_page(["a"], next_url)))
    async with FhirClient(base_url=BASE, auth=TOKEN, sleep=sleeps) as client:
        with pytest.raises(ForeignOriginError, match="another origin"):
            _ = [r async for r in client.search("Patient", {})]
    assert [str(call.request.url) for call in mock.calls] == [f"{BASE}/Patient"]


def _export_routes(mock: respx.MockRouter, status_url: str, manifest: dict[str, Any]) -> None:
    mock.get("/Patient/$export").mock(
        return_value=httpx.Response(202, headers={"Content-Location": status_url})
    )
    mock.get("/status/1").mock(return_value=httpx.Response(200, json=manifest))


async def test_an_export_status_url_on_another_origin_is_refused(
    mock: respx.MockRouter, sleeps: Sleeps
) -> None:
    foreign = mock.get(f"{EVIL}/status/1").mock(return_value=httpx.Response(200, json={}))
    _export_routes(mock, f"{EVIL}/status/1", {})
    async with FhirClient(base_url=BASE, auth=TOKEN, sleep=sleeps) as client:
        with pytest.raises(ForeignOriginError):
            await client.export_manifest()
    assert not foreign.called


NDJSON = b'{"resourceType": "Patient", "id": "a"}\n\n{"resourceType": "Patient", "id": "b"}\n'


@pytest.mark.parametrize(
    ("requires_token", "allow", "fetched"),
    [(True, True, False), (False, False, False), (False, True, True)],
)
async def test_export_files_on_another_origin(
    mock: respx.MockRouter, sleeps: Sleeps, requires_token: bool, allow: bool, fetched: bool
) -> None:
    file = mock.get(f"{EVIL}/files/p.ndjson").mock(return_value=httpx.Response(200, content=NDJSON))
    async with FhirClient(
        base_url=BASE, auth=TOKEN, sleep=sleeps, allow_foreign_export_files=allow
    ) as client:
        stream = client.stream_ndjson(
            f"{EVIL}/files/p.ndjson", requires_access_token=requires_token
        )
        if not fetched:
            with pytest.raises(ForeignOriginError):
                _ = [r async for r in stream]
            assert not file.called
            return
        assert [r["id"] async for r in stream] == ["a", "b"]
    assert "Authorization" not in file.calls[0].request.headers


async def test_export_files_on_the_server_get_credentials_retries_and_reauth(
    mock: respx.MockRouter, sleeps: Sleeps
) -> None:
    token = mock.post("https://auth.test/token").mock(
        side_effect=[
            httpx.Response(200, json={"access_token": f"t{i}", "expires_in": 3600}) for i in (1, 2)
        ]
    )
    file = mock.get("/files/p.ndjson").mock(
        side_effect=[httpx.Response(503), httpx.Response(401), httpx.Response(200, content=NDJSON)]
    )
    auth = ClientCredentials("https://auth.test/token", "study", SecretStr("s3cret"))
    async with FhirClient(base_url=BASE, auth=auth, sleep=sleeps, backoff=0.1) as client:
        got = [r["id"] async for r in client.stream_ndjson(f"{BASE}/files/p.ndjson")]
    assert got == ["a", "b"]
    assert (file.call_count, token.call_count) == (3, 2)
    assert file.calls[2].request.headers["Authorization"] == "Bearer t2"
    assert sleeps.calls == [0.1]


async def test_endless_distinct_next_links_stop_at_the_page_budget(
    mock: respx.MockRouter, sleeps: Sleeps
) -> None:
    def page(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params.get("page", "0"))
        return httpx.Response(200, json=_page([str(n)], f"Patient?page={n + 1}"))

    route = mock.get("/Patient").mock(side_effect=page)
    async with FhirClient(base_url=BASE, sleep=sleeps, max_pages=25) as client:
        with pytest.raises(LimitExceeded, match="max_pages_per_pull"):
            _ = [r async for r in client.search("Patient", {})]
    assert route.call_count == 25


async def test_a_page_with_too_many_entries_is_refused(
    mock: respx.MockRouter, sleeps: Sleeps
) -> None:
    ids = [str(i) for i in range(11)]
    mock.get("/Patient").mock(return_value=httpx.Response(200, json=_page(ids, None)))
    async with FhirClient(base_url=BASE, sleep=sleeps, max_entries_per_page=10) as client:
        with pytest.raises(LimitExceeded, match="max_entries_per_page"):
            _ = [r async for r in client.search("Patient", {})]


@pytest.mark.parametrize("declared", [True, False])
async def test_an_answer_larger_than_the_limit_is_refused(
    mock: respx.MockRouter, sleeps: Sleeps, declared: bool
) -> None:
    body = orjson.dumps(_page([str(i) for i in range(200)], None))

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    answer = httpx.Response(200, content=body if declared else chunks())
    mock.get("/Patient").mock(return_value=answer)
    async with FhirClient(base_url=BASE, sleep=sleeps, max_response_bytes=4096) as client:
        with pytest.raises(LimitExceeded, match="max_response_bytes"):
            _ = [r async for r in client.search("Patient", {})]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            httpx.Response(200, text="<html>login</html>", headers={"Content-Type": "text/html"}),
            "not JSON \\(text/html\\)",
        ),
        (httpx.Response(200, content=b'{"resourceType": "Bundle", "entry": [{"res'), "not JSON"),
        (httpx.Response(200, json=[1, 2]), "not an object"),
        (httpx.Response(200, json={"resourceType": "Patient", "id": "x"}), "not a Bundle"),
        (httpx.Response(200, json={"resourceType": "Bundle", "entry": {"a": 1}}), "not a Bundle"),
        (httpx.Response(200, json={"resourceType": "Bundle", "entry": [1]}), "not a JSON object"),
    ],
)
async def test_a_malformed_search_answer_is_a_bad_response(
    mock: respx.MockRouter, sleeps: Sleeps, answer: httpx.Response, message: str
) -> None:
    mock.get("/Patient").mock(return_value=answer)
    async with FhirClient(base_url=BASE, sleep=sleeps) as client:
        with pytest.raises(BadResponse, match=message):
            _ = [r async for r in client.search("Patient", {})]


async def test_a_malformed_ndjson_line_is_a_bad_response(
    mock: respx.MockRouter, sleeps: Sleeps
) -> None:
    mock.get("/files/p.ndjson").mock(return_value=httpx.Response(200, content=b'{"a": 1}\n{"tr'))
    async with FhirClient(base_url=BASE, sleep=sleeps) as client:
        with pytest.raises(BadResponse, match="line 2 is not JSON"):
            _ = [r async for r in client.stream_ndjson("files/p.ndjson")]


class _CountingAuth:
    """Credentials that count how often they are asked for."""

    refreshable = False

    def __init__(self) -> None:
        self.asked = 0

    async def headers(self, http: httpx.AsyncClient, base_url: str) -> dict[str, str]:
        self.asked += 1
        return {"Authorization": "Bearer secret-token"}

    def invalidate(self) -> None:
        return None


@pytest.mark.parametrize(
    "url",
    [
        "https://elsewhere.test/r4/Patient",  # another host
        "http://fhir.test:8443/r4/Patient",  # same host and port, another scheme
        "https://fhir.test:9443/r4/Patient",  # another port
    ],
)
@respx.mock
async def test_send_never_attaches_credentials_off_origin(url: str) -> None:
    """The one place credentials are attached checks the origin itself, whoever calls it."""
    seen = respx.route().mock(return_value=httpx.Response(200, json={}))
    auth = _CountingAuth()
    async with FhirClient(base_url="https://fhir.test:8443/r4", auth=auth, max_retries=0) as c:
        with pytest.raises(ForeignOriginError):
            await c._send("GET", url, None, None, None)
        assert (auth.asked, seen.call_count) == (0, 0)
        await c._send("GET", "https://fhir.test:8443/r4/Patient", None, None, None)
        assert (auth.asked, seen.call_count) == (1, 1)


def test_an_origin_is_scheme_host_and_port() -> None:
    from fhir_cart.client import origin

    assert origin("https://FHIR.test/r4") == ("https", "fhir.test", 443)
    assert origin("http://fhir.test:443/r4") == ("http", "fhir.test", 443)
    assert origin("http://fhir.test:443/r4") != origin("https://fhir.test/r4")


async def test_clients_share_one_tls_context_made_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the CA bundle cost tens of milliseconds per client: it is done once per
    process, and every client verifies servers with that same default context."""
    import ssl

    from fhir_cart import client as module

    shared = module._tls()
    assert shared.verify_mode == ssl.CERT_REQUIRED
    assert shared.check_hostname

    def refuse(*_: object, **__: object) -> ssl.SSLContext:
        raise AssertionError("a TLS context was made again")

    monkeypatch.setattr(ssl, "create_default_context", refuse)
    for _ in range(2):
        async with FhirClient(base_url=BASE) as client:
            assert client.http is not None
