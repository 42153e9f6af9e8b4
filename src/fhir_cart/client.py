"""Async FHIR R4 client on httpx: one owner of the connection pool, retries, paging.

Retries (with exponential backoff, honouring ``Retry-After``) happen only for requests that
are safe to repeat: reads, and writes the caller marks idempotent (conditional
create/update, transactions made only of conditional entries). Errors are sorted by what the
caller should do (see :mod:`fhir_cart.errors`). Log lines carry the method, the resource path
without its query string (identifiers sit there), the status and the time: never bodies,
query strings or tokens.

Trust: credentials go only to the origin of ``base_url``. A URL the server names (a search
``next`` link, an ``$export`` status URL, an export file) on any other origin is refused
with :class:`ForeignOriginError`; export files alone may be fetched from elsewhere, without
credentials, when the manifest says ``requiresAccessToken: false`` and the caller allows it.
Every answer is read with a byte limit, search paging with a page budget and an entries
per page limit, and an answer that is not the JSON expected is a :class:`BadResponse`.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urljoin, urlsplit

import httpx
import orjson

from fhir_cart.auth import Auth, NoAuth
from fhir_cart.errors import (
    AuthError,
    BadResponse,
    ConfigError,
    FatalHttpError,
    FhirClientError,
    ForeignOriginError,
    LimitExceeded,
    PreconditionFailed,
    RetryableError,
)
from fhir_cart.references import id_problem
from fhir_cart.types import Json

__all__ = ["EntryResult", "FhirClient", "origin", "outcome_message"]

log = logging.getLogger(__name__)


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
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, RFC 6454 style: what credentials are bound to."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: an origin nothing matches
        return scheme, "", -1
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme, 0)


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


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's own default TLS context (certifi's CAs, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` as read at first use), made once per process and shared: loading the
    CA bundle cost tens of milliseconds of CPU for every client, push, pull and test."""
    return httpx.create_ssl_context()


class FhirClient:
    """``async with FhirClient(base_url=...) as fhir:`` — refuses use outside ``async with``.

    ``max_pages`` is a budget for the client's whole life (one pull), ``max_entries_per_page``
    and ``max_response_bytes`` hold for each answer."""

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
        max_pages: int = 10_000,
        max_entries_per_page: int = 1_000,
        max_response_bytes: int = 64 * 1024 * 1024,
        allow_foreign_export_files: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.origin = origin(self.base_url)
        self.auth: Auth = auth or NoAuth()
        self.max_retries = max_retries
        self.backoff = backoff
        self.strict = strict
        self.max_pages = max_pages
        self.max_entries_per_page = max_entries_per_page
        self.max_response_bytes = max_response_bytes
        self.allow_foreign_export_files = allow_foreign_export_files
        self.pages = 0
        self._sleep = sleep
        self._timeout = timeout
        self._transport = transport
        self._limits = httpx.Limits(max_connections=max_connections)
        self._http: httpx.AsyncClient | None = None
        self._capabilities: Json | None = None
        self._auth_lock = asyncio.Lock()
        self._auth_generation = 0
        """Bumped each time a refused token is forgotten."""

    async def __aenter__(self) -> FhirClient:
        self._http = httpx.AsyncClient(
            timeout=self._timeout, transport=self._transport, limits=self._limits, verify=_tls()
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
        """The absolute URL of ``path``; an absolute URL must be on the server's origin."""
        if path.startswith(("http://", "https://")) or "://" in path.split("?", 1)[0]:
            if not self.same_origin(path):
                raise ForeignOriginError(
                    f"the server named a URL on another origin ({_host(path)}); refused: "
                    "credentials and requests go only to the configured server"
                )
            return path
        return f"{self.base_url}/{path.lstrip('/')}" if path else self.base_url

    def same_origin(self, url: str) -> bool:
        return origin(url) == self.origin

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
        """Send with auth, retries (when safe) and one re-authentication on 401; the answer
        is read whole, up to ``max_response_bytes``."""
        safe = method in ("GET", "HEAD") if idempotent is None else idempotent
        url = self.url(path)
        content = orjson.dumps(body) if body is not None else None
        response = await self._open(method, url, params, content, headers, safe=safe)
        try:
            await self._read(response)
        finally:
            await response.aclose()
        return response

    async def _open(
        self,
        method: str,
        url: str,
        params: dict[str, str] | None,
        content: bytes | None,
        headers: dict[str, str] | None,
        *,
        safe: bool,
        credentials: bool = True,
    ) -> httpx.Response:
        """A response with status < 400 whose body is still to be read (caller closes it)."""
        reauthed = False
        attempt = 0
        while True:
            attempt += 1
            generation = self._auth_generation
            try:
                response = await self._send(method, url, params, content, headers, credentials)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if not safe or attempt > self.max_retries:
                    raise RetryableError(
                        f"{method} {_path(url)}: {exc.__class__.__name__}"
                    ) from exc
                await self._sleep(self._delay(attempt, None))
                continue
            if response.status_code < 400:
                return response
            try:
                await self._read(response)
            finally:
                await response.aclose()
            refresh = credentials and self.auth.refreshable and not reauthed
            if response.status_code == 401 and refresh:
                reauthed = True
                if generation == self._auth_generation:
                    # the token this request went with is refused: forget it, once (requests
                    # that were in flight with it take the next one, not one each)
                    self._auth_generation += 1
                    self.auth.invalidate()
                continue
            if response.status_code in RETRYABLE_STATUSES and safe and attempt <= self.max_retries:
                await self._sleep(self._delay(attempt, retry_after(response)))
                continue
            raise _error_for(response, f"{method} {_path(url)}")

    async def _read(self, response: httpx.Response) -> None:
        """Read the body, refusing more than ``max_response_bytes`` (a 50,000-entry page is
        about 1 GB in memory once parsed)."""
        limit = self.max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise LimitExceeded(
                f"the server's answer is larger than {limit} bytes (setting max_response_bytes)"
            )
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise LimitExceeded(
                        f"the server's answer is larger than {limit} bytes "
                        "(setting max_response_bytes)"
                    )
                chunks.append(chunk)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            what = f"{response.request.method} {_path(str(response.request.url))}"
            raise RetryableError(f"{what}: {exc.__class__.__name__} while reading") from exc
        # what httpx's own Response.aread() stores: .content and .json() work as usual
        response._content = b"".join(chunks)

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
        credentials: bool = True,
    ) -> httpx.Response:
        headers = {"Accept": FHIR_JSON}
        if credentials:
            # the one place credentials are attached: only ever for the configured origin
            if not self.same_origin(url):
                raise ForeignOriginError(f"credentials refused for {_host(url)}")
            async with self._auth_lock:  # one token request at a time, shared by all
                headers.update(await self.auth.headers(self.http, self.base_url))
        if content is not None:
            headers["Content-Type"] = FHIR_JSON
        headers.update(extra or {})
        started = time.perf_counter()
        request = self.http.build_request(
            method, url, params=params, content=content, headers=headers
        )
        response = await self.http.send(request, stream=True)
        elapsed = (time.perf_counter() - started) * 1000
        log.debug("%s %s -> %s in %.0f ms", method, _path(url), response.status_code, elapsed)
        return response

    # -- interactions ----------------------------------------------------------------------

    async def capabilities(self) -> Json:
        if self._capabilities is None:
            self._capabilities = _json(await self.request("GET", "metadata"))
        return self._capabilities

    async def read(self, resource_type: str, resource_id: str) -> Json:
        _check_id(resource_type, resource_id)
        response = await self.request("GET", f"{resource_type}/{resource_id}")
        return _json(response)

    async def create(self, resource: Json, *, if_none_exist: str | None = None) -> Json:
        headers = {"If-None-Exist": if_none_exist} if if_none_exist else None
        response = await self.request(
            "POST",
            resource["resourceType"],
            body=resource,
            headers=headers,
            idempotent=if_none_exist is not None,
        )
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
        return entry_results(_bundle(response))

    # -- search and paging ------------------------------------------------------------------

    async def search_bundles(
        self, resource_type: str, params: dict[str, str]
    ) -> AsyncIterator[Json]:
        """Each page Bundle of a search, following ``next`` links (relative ones too) on
        the server's origin, within the page budget and the entries per page limit."""
        headers = {"Prefer": "handling=strict"} if self.strict else None
        response = await self._page("GET", resource_type, params, headers)
        seen: set[str] = set()
        while True:
            page = _bundle(response)
            if len(page.get("entry", ())) > self.max_entries_per_page:
                raise LimitExceeded(
                    f"a search page holds more than {self.max_entries_per_page}"
                    " entries (setting max_entries_per_page)"
                )
            yield page
            next_url = _next_link(page, str(response.url))
            if next_url is None:
                return
            if next_url in seen:
                log.warning("search paging: next link repeats an earlier page; stopping")
                return
            seen.add(next_url)
            response = await self._page("GET", next_url, None, headers)

    async def _page(
        self, method: str, path: str, params: dict[str, str] | None, headers: dict[str, str] | None
    ) -> httpx.Response:
        self.pages += 1
        if self.pages > self.max_pages:
            raise LimitExceeded(
                f"more than {self.max_pages} search pages in one pull (setting max_pages_per_pull)"
            )
        return await self.request(method, path, params=params, headers=headers)

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
        manifest = await self.export_manifest(
            group_id=group_id, types=types, since=since, poll_limit=poll_limit
        )
        return list(manifest.get("output", ()))

    async def export_manifest(
        self,
        *,
        group_id: str | None = None,
        types: list[str] | None = None,
        since: str | None = None,
        poll_limit: int = 600,
    ) -> Json:
        """Bulk Data ``$export`` to its completion manifest (``output``,
        ``requiresAccessToken``). The status URL must be on the server's origin."""
        if group_id:
            _check_id("Group", group_id)
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
        status_url = urljoin(str(kick.url), status_url)
        for _ in range(poll_limit):
            poll = await self.request("GET", status_url)
            if poll.status_code == 200:
                manifest = _json(poll)
                outputs = manifest.get("output", [])
                if not isinstance(outputs, list) or not all(
                    isinstance(o, dict) and isinstance(o.get("url"), str) for o in outputs
                ):
                    raise BadResponse("$export manifest: output is not a list of files")
                return manifest
            await self._sleep(min(retry_after(poll) or 1.0, _MAX_WAIT))
        raise RetryableError("$export did not finish in time")

    async def stream_ndjson(
        self, url: str, *, requires_access_token: bool = True
    ) -> AsyncIterator[Json]:
        """Resources of an NDJSON file, line by line, never the whole file in memory, with
        the client's retries and re-authentication (before the first byte).

        A file on the server's origin is fetched with credentials. One elsewhere only
        without them, when the manifest says ``requiresAccessToken: false`` and
        ``allow_foreign_export_files`` is set; otherwise it is refused."""
        target = url if url.startswith(("http://", "https://")) else self.url(url)
        credentials = self.same_origin(target)
        if not credentials:
            if requires_access_token:
                raise ForeignOriginError(
                    f"export file on another origin ({_host(target)}) needs the access token,"
                    " which goes only to the configured server; refused"
                )
            if not self.allow_foreign_export_files:
                raise ForeignOriginError(
                    f"export file on another origin ({_host(target)}); refused (setting "
                    "allow_foreign_export_files allows such files, fetched without credentials)"
                )
        headers = {"Accept": "application/fhir+ndjson"}
        response = await self._open(
            "GET", target, None, None, headers, safe=True, credentials=credentials
        )
        try:
            async for line in _lines(response, self.max_response_bytes):
                yield line
        finally:
            await response.aclose()


async def _lines(response: httpx.Response, max_line: int) -> AsyncIterator[Json]:
    what = f"GET {_path(str(response.request.url))}"
    number = 0
    try:
        async for line in response.aiter_lines():
            number += 1
            if len(line) > max_line:
                raise LimitExceeded(f"{what}: line {number} is longer than {max_line} bytes")
            if not line.strip():
                continue
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise BadResponse(f"{what}: line {number} is not JSON") from None
            if not isinstance(resource, dict):
                raise BadResponse(f"{what}: line {number} is not a JSON object")
            yield resource
    except (httpx.TimeoutException, httpx.TransportError) as exc:
        raise RetryableError(f"{what}: {exc.__class__.__name__} while reading") from exc


def _host(url: str) -> str:
    """Scheme and host of a URL, for messages (no path, no query, no user info)."""
    scheme, host, port = origin(url)
    return f"{scheme}://{host}:{port}"


def _json(response: httpx.Response) -> Json:
    if not response.content:
        return {}
    what = f"{response.request.method} {_path(str(response.request.url))}"
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        kind = response.headers.get("Content-Type", "no content type").split(";")[0]
        raise BadResponse(f"{what}: the server's answer is not JSON ({kind})") from None
    if not isinstance(body, dict):
        raise BadResponse(f"{what}: the server answered with JSON that is not an object")
    return body


def _bundle(response: httpx.Response) -> Json:
    page = _json(response)
    entries = page.get("entry", [])
    if page.get("resourceType") != "Bundle" or not isinstance(entries, list):
        what = f"{response.request.method} {_path(str(response.request.url))}"
        raise BadResponse(f"{what}: the server's answer is not a Bundle")
    if not all(isinstance(e, dict) for e in entries):
        raise BadResponse("a Bundle entry is not a JSON object")
    return page


def _check_id(resource_type: str, resource_id: str) -> None:
    """An id put into a request path (a Group named by a user, say) must be a FHIR id."""
    problem = id_problem(resource_id)
    if problem:
        raise ConfigError(f"{resource_type} id {resource_id[:70]!r}: {problem}")


def bundle_links(page: Json) -> list[Json]:
    """A Bundle's ``link`` (0..*: a JSON array of objects); anything else is BadResponse."""
    links = page.get("link", [])
    if not isinstance(links, list) or not all(isinstance(x, dict) for x in links):
        raise BadResponse(
            "the server's Bundle has a 'link' that is not a list of links "
            f"(got {type(links).__name__}): not FHIR R4 JSON; the server "
            "cannot be paged"
        )
    return links


def _next_link(page: Json, current: str) -> str | None:
    for link in bundle_links(page):
        if link.get("relation") == "next" and link.get("url"):
            return urljoin(current, str(link["url"]))
    return None


def _etag_of(resource: Json | None) -> str | None:
    """A returned resource's version as an ETag, for servers whose entry response has
    neither ``etag`` nor a versioned ``location`` (Medplum's router)."""
    version = ((resource or {}).get("meta") or {}).get("versionId")
    return f'W/"{version}"' if version else None


_STATUS = re.compile(r"^([1-5][0-9][0-9])(?: .*)?$")


def entry_status(given: object, number: int) -> int:
    """``Bundle.entry.response.status``: an HTTP status code, optionally with its text
    ('201 Created'); anything else ('OK') is BadResponse naming the entry. A missing one
    reads as 0 (no answer for the entry)."""
    text = str(given).strip()
    if text == "0":
        return 0
    match = _STATUS.match(text)
    if match is None:
        raise BadResponse(
            f"entry {number} of the server's answer has response.status "
            f"{text[:40]!r}, not an HTTP status code such as '201 Created': "
            "the server's answer is not FHIR R4"
        )
    return int(match.group(1))


def entry_results(bundle: Json) -> list[EntryResult]:
    """Per-entry results of a batch/transaction response; a 4xx/5xx entry is kept as such."""
    out = []
    for number, entry in enumerate(bundle.get("entry", ()), start=1):
        response = entry.get("response") or {}
        status = entry_status(response.get("status", "0"), number)
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
