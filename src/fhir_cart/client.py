"""Async FHIR R4 client on httpx: one owner of the connection pool, retries, paging.

Retries (with exponential backoff, honouring ``Retry-After``) happen only for requests that
are safe to repeat: reads, and writes the caller marks idempotent (conditional
create/update, transactions made only of conditional entries). Errors are sorted by what the
caller should do (see :mod:`fhir_cart.errors`). Log lines carry the method, the resource path
without its query string (identifiers sit there), the status and the time: never bodies,
query strings or tokens.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import orjson

from fhir_cart.auth import Auth, NoAuth
from fhir_cart.errors import (
    AuthError,
    FatalHttpError,
    FhirClientError,
    PreconditionFailed,
    RetryableError,
)

__all__ = ["EntryResult", "FhirClient", "outcome_message"]

log = logging.getLogger(__name__)
Json = dict[str, Any]


class _UrlsWithoutQuery(logging.Filter):
    """httpx logs every request's full URL at INFO, and FHIR queries carry identifiers
    (``Patient?identifier=system|MRN``): an application logging at INFO would write them out.
    This filter, on httpx's logger, turns the URL arguments of its records into their path."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _path(str(arg)) if isinstance(arg, httpx.URL) else arg for arg in record.args
            )
        return True


_HTTPX_LOG = logging.getLogger("httpx")
if not any(isinstance(f, _UrlsWithoutQuery) for f in _HTTPX_LOG.filters):
    _HTTPX_LOG.addFilter(_UrlsWithoutQuery())

# Statuses worth another try: timeout, throttling and server-side trouble
# (RFC 9110 15.5.9, RFC 6585 4, RFC 9110 15.6).
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_MAX_WAIT = 60.0
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class EntryResult:
    """What the server said about one entry of a batch or transaction."""

    status: int
    location: str | None
    etag: str | None
    last_modified: str | None
    outcome: Json | None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def server_id(self) -> str | None:
        return _location_part(self.location, -3) if self.location else None

    @property
    def version_id(self) -> str | None:
        if self.location and "/_history/" in self.location:
            return self.location.rsplit("/", 1)[-1]
        if self.etag:  # W/"3" (http://hl7.org/fhir/R4/http.html#versioning)
            return self.etag.removeprefix("W/").strip('"') or None
        return None


def _location_part(location: str, index: int) -> str | None:
    parts = location.rstrip("/").split("/")
    if "_history" in parts:
        return parts[parts.index("_history") - 1]
    return parts[-1] if parts else None


def outcome_message(outcome: Json | None) -> str:
    """One readable line from an OperationOutcome (the one place that does this)."""
    if not outcome or outcome.get("resourceType") != "OperationOutcome":
        return ""
    parts = []
    for issue in outcome.get("issue", ()):
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
        where = ", ".join(issue.get("expression", ()) or issue.get("location", ()))
        line = f"{issue.get('severity', '?')} {issue.get('code', '?')}: {text}".strip()
        parts.append(f"{line} (at {where})" if where else line)
    return "; ".join(parts)


def _parse_outcome(response: httpx.Response) -> Json | None:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_for(response: httpx.Response, what: str) -> FhirClientError:
    outcome = _parse_outcome(response)
    detail = outcome_message(outcome) or response.reason_phrase
    message = f"{what}: HTTP {response.status_code} {detail}".strip()
    cls: type[FhirClientError]
    if response.status_code in RETRYABLE_STATUSES:
        cls = RetryableError
    elif response.status_code == 412:
        cls = PreconditionFailed
    elif response.status_code in (401, 403):
        cls = AuthError
    else:
        cls = FatalHttpError
    return cls(message, status=response.status_code, response=response, outcome=outcome)


def _path(url: str) -> str:
    """The resource path of a URL, without query string: what may be logged."""
    return urlsplit(url).path


class FhirClient:
    """``async with FhirClient(base_url=...) as fhir:`` — refuses use outside ``async with``."""

    def __init__(
        self,
        *,
        base_url: str,
        auth: Auth | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        strict: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_connections: int = 10,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth: Auth = auth or NoAuth()
        self.max_retries = max_retries
        self.backoff = backoff
        self.strict = strict
        self._sleep = sleep
        self._timeout = timeout
        self._transport = transport
        self._limits = httpx.Limits(max_connections=max_connections)
        self._http: httpx.AsyncClient | None = None
        self._capabilities: Json | None = None

    async def __aenter__(self) -> FhirClient:
        self._http = httpx.AsyncClient(
            timeout=self._timeout, transport=self._transport, limits=self._limits
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.aclose()
        self._http = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("use FhirClient inside 'async with'")
        return self._http

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}" if path else self.base_url

    # -- the one request path ------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Json | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send with auth, retries (when safe) and one re-authentication on 401."""
        safe = method in ("GET", "HEAD") if idempotent is None else idempotent
        url = self.url(path)
        content = orjson.dumps(body) if body is not None else None
        reauthed = False
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._send(method, url, params, content, headers)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if not safe or attempt > self.max_retries:
                    raise RetryableError(
                        f"{method} {_path(url)}: {exc.__class__.__name__}"
                    ) from exc
                await self._sleep(self._delay(attempt, None))
                continue
            if response.status_code == 401 and self.auth.refreshable and not reauthed:
                reauthed = True
                self.auth.invalidate()
                continue
            if response.status_code in RETRYABLE_STATUSES and safe and attempt <= self.max_retries:
                await self._sleep(self._delay(attempt, retry_after(response)))
                continue
            if response.status_code >= 400:
                raise _error_for(response, f"{method} {_path(url)}")
            return response

    def _delay(self, attempt: int, hinted: float | None) -> float:
        if hinted is not None:
            return float(min(hinted, _MAX_WAIT))
        return float(min(self.backoff * 2.0 ** (attempt - 1), 30.0))

    async def _send(
        self,
        method: str,
        url: str,
        params: dict[str, str] | None,
        content: bytes | None,
        extra: dict[str, str] | None,
    ) -> httpx.Response:
        headers = {"Accept": FHIR_JSON, **(await self.auth.headers(self.http, self.base_url))}
        if content is not None:
            headers["Content-Type"] = FHIR_JSON
        headers.update(extra or {})
        started = time.perf_counter()
        response = await self.http.request(
            method, url, params=params, content=content, headers=headers
        )
        elapsed = (time.perf_counter() - started) * 1000
        log.debug("%s %s -> %s in %.0f ms", method, _path(url), response.status_code, elapsed)
        return response

    # -- interactions ----------------------------------------------------------------------

    async def capabilities(self) -> Json:
        if self._capabilities is None:
            self._capabilities = orjson.loads((await self.request("GET", "metadata")).content)
        return self._capabilities

    async def read(self, resource_type: str, resource_id: str) -> Json:
        response = await self.request("GET", f"{resource_type}/{resource_id}")
        return _json(response)

    async def create(self, resource: Json, *, if_none_exist: str | None = None) -> Json:
        headers = {"If-None-Exist": if_none_exist} if if_none_exist else None
        response = await self.request(
            "POST", resource["resourceType"], body=resource, headers=headers,
            idempotent=if_none_exist is not None,
        )  # fmt: skip
        return _json(response)

    async def update(self, resource: Json, *, if_match: str | None = None) -> Json:
        headers = {"If-Match": if_match} if if_match else None
        path = f"{resource['resourceType']}/{resource['id']}"
        return _json(
            await self.request("PUT", path, body=resource, headers=headers, idempotent=True)
        )

    async def conditional_update(self, resource_type: str, query: str, resource: Json) -> Json:
        path = f"{resource_type}?{query}"
        return _json(await self.request("PUT", path, body=resource, idempotent=True))

    async def transaction(self, bundle: Json, *, idempotent: bool = True) -> list[EntryResult]:
        response = await self.request("POST", "", body=bundle, idempotent=idempotent)
        return entry_results(_json(response))

    async def supports(self, interaction: str) -> bool:
        rest = (await self.capabilities()).get("rest") or [{}]
        codes = {i.get("code") for i in rest[0].get("interaction", ())}
        return interaction in codes

    async def bundle_submit(self, bundle: Json) -> tuple[str, list[EntryResult]]:
        """Send as a transaction, or as a batch where the server has no transactions."""
        if await self.supports("transaction"):
            return "transaction", await self.transaction(bundle)
        if not await self.supports("batch"):
            raise FatalHttpError("server supports neither transaction nor batch")
        log.warning("server does not support transactions: sending a batch instead")
        return "batch", await self.transaction({**bundle, "type": "batch"})

    # -- search and paging ------------------------------------------------------------------

    async def search_bundles(
        self, resource_type: str, params: dict[str, str]
    ) -> AsyncIterator[Json]:
        """Each page Bundle of a search, following ``next`` links (relative ones too)."""
        headers = {"Prefer": "handling=strict"} if self.strict else None
        response = await self.request("GET", resource_type, params=params, headers=headers)
        seen: set[str] = set()
        while True:
            page = _json(response)
            yield page
            next_url = _next_link(page, str(response.url))
            if next_url is None:
                return
            if next_url in seen:
                log.warning("search paging: next link repeats an earlier page; stopping")
                return
            seen.add(next_url)
            response = await self.request("GET", next_url, headers=headers)

    async def search(self, resource_type: str, params: dict[str, str]) -> AsyncIterator[Json]:
        """Matched resources (``search.mode`` match or unspecified), across all pages."""
        async for page in self.search_bundles(resource_type, params):
            for entry in page.get("entry", ()):
                mode = (entry.get("search") or {}).get("mode", "match")
                resource = entry.get("resource")
                if resource is not None and mode == "match":
                    yield resource

    # -- bulk data ----------------------------------------------------------------------------

    async def export(
        self,
        *,
        group_id: str | None = None,
        types: list[str] | None = None,
        since: str | None = None,
        poll_limit: int = 600,
    ) -> list[Json]:
        """Bulk Data ``$export``: kick off, poll honouring Retry-After, return the outputs."""
        path = f"Group/{group_id}/$export" if group_id else "Patient/$export"
        params = {"_type": ",".join(types)} if types else {}
        if since:
            params["_since"] = since
        kick = await self.request("GET", path, params=params, headers={"Prefer": "respond-async"})
        status_url = kick.headers.get("Content-Location")
        if kick.status_code != 202 or not status_url:
            raise FatalHttpError(
                f"$export kick-off answered {kick.status_code} without a status URL"
            )
        for _ in range(poll_limit):
            poll = await self.request("GET", status_url)
            if poll.status_code == 200:
                return list(_json(poll).get("output", ()))
            await self._sleep(min(retry_after(poll) or 1.0, _MAX_WAIT))
        raise RetryableError("$export did not finish in time")

    async def stream_ndjson(self, url: str) -> AsyncIterator[Json]:
        """Resources of an NDJSON file, line by line, never the whole file in memory."""
        headers = {"Accept": "application/fhir+ndjson",
                   **(await self.auth.headers(self.http, self.base_url))}  # fmt: skip
        async with self.http.stream("GET", self.url(url), headers=headers) as response:
            if response.status_code >= 400:
                await response.aread()
                raise _error_for(response, f"GET {_path(url)}")
            async for line in response.aiter_lines():
                if line.strip():
                    yield orjson.loads(line)


def _json(response: httpx.Response) -> Json:
    if not response.content:
        return {}
    body = orjson.loads(response.content)
    if not isinstance(body, dict):
        raise FatalHttpError("server answered with JSON that is not an object")
    return body


def _next_link(page: Json, current: str) -> str | None:
    for link in page.get("link", ()):
        if link.get("relation") == "next" and link.get("url"):
            return urljoin(current, str(link["url"]))
    return None


def _etag_of(resource: Json | None) -> str | None:
    """A returned resource's version as an ETag, for servers whose entry response has
    neither ``etag`` nor a versioned ``location`` (Medplum's router)."""
    version = ((resource or {}).get("meta") or {}).get("versionId")
    return f'W/"{version}"' if version else None


def entry_results(bundle: Json) -> list[EntryResult]:
    """Per-entry results of a batch/transaction response; a 4xx/5xx entry is kept as such."""
    out = []
    for entry in bundle.get("entry", ()):
        response = entry.get("response") or {}
        status_text = str(response.get("status", "0"))
        status = int(status_text.split()[0]) if status_text.split() else 0
        out.append(
            EntryResult(
                status=status,
                location=response.get("location"),
                etag=response.get("etag") or _etag_of(entry.get("resource")),
                last_modified=response.get("lastModified"),
                outcome=response.get("outcome"),
            )
        )
    return out
