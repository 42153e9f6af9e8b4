"""Credentials for FHIR servers: none, basic, static bearer, OAuth2 client credentials and
SMART Backend Services (client_credentials with a private_key_jwt assertion).

Token-based schemes cache their token until 60 s before it expires; the client asks for a
fresh one once when the server answers 401. Secrets never appear in ``repr`` or logs.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson
from pydantic import SecretStr

from fhir_cart.errors import AuthError

__all__ = [
    "Auth",
    "BasicAuth",
    "BearerToken",
    "ClientCredentials",
    "NoAuth",
    "SmartBackendServices",
]

_EARLY = 60.0
"""Seconds before expiry at which a cached token is renewed."""


class Auth(Protocol):
    async def headers(self, http: httpx.AsyncClient, base_url: str) -> dict[str, str]: ...

    def invalidate(self) -> None: ...

    @property
    def refreshable(self) -> bool: ...


class NoAuth:
    refreshable = False

    async def headers(self, http: httpx.AsyncClient, base_url: str) -> dict[str, str]:
        return {}

    def invalidate(self) -> None:
        return None


@dataclass(repr=False)
class BasicAuth:
    username: str
    password: SecretStr
    refreshable = False

    async def headers(self, http: httpx.AsyncClient, base_url: str) -> dict[str, str]:
        raw = f"{self.username}:{self.password.get_secret_value()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def invalidate(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password=**********)"


@dataclass(repr=False)
class BearerToken:
    token: SecretStr
    refreshable = False

    async def headers(self, http: httpx.AsyncClient, base_url: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token.get_secret_value()}"}

    def invalidate(self) -> None:
        return None

    def __repr__(self) -> str:
        return "BearerToken(token=**********)"


@dataclass(repr=False)
class _TokenCache:
    token: str | None = None
    expires_at: float = 0.0

    def valid(self) -> bool:
        return self.token is not None and time.monotonic() < self.expires_at - _EARLY


MAX_AUTH_ANSWER = 1024 * 1024
"""SMART configurations and token answers are a few hundred bytes: a larger answer is
refused while it streams in, never held whole."""


async def _capped(
    http: httpx.AsyncClient, what: str, method: str, url: str, **kwargs: Any
) -> tuple[int, bytes]:
    """(status, body) of a request to an authorisation endpoint, reading at most
    :data:`MAX_AUTH_ANSWER` bytes of the answer."""
    async with http.stream(method, url, **kwargs) as response:
        declared = response.headers.get("content-length", "")
        size, chunks = int(declared) if declared.isdigit() else 0, []
        if size <= MAX_AUTH_ANSWER:
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_AUTH_ANSWER:
                    break
                chunks.append(chunk)
        if size > MAX_AUTH_ANSWER:
            raise AuthError(
                f"{what} answered with more than {MAX_AUTH_ANSWER} bytes; such "
                "an answer is a few hundred: check the server's address in the "
                "settings"
            )
        return response.status_code, b"".join(chunks)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


async def _request_token(
    http: httpx.AsyncClient, url: str, form: dict[str, str], headers: dict[str, str]
) -> tuple[str, float]:
    status, content = await _capped(
        http, "the token endpoint", "POST", url, data=form, headers=headers
    )
    if status != 200:
        raise AuthError(f"token endpoint refused the credentials (HTTP {status})", status=status)
    body = _json_object(content) or {}
    try:
        return str(body["access_token"]), float(body.get("expires_in", 300))
    except (KeyError, TypeError, ValueError) as exc:
        raise AuthError("token endpoint answered without an access_token") from exc


@dataclass(repr=False)
class ClientCredentials:
    """OAuth2 client_credentials with a client secret (HTTP Basic at the token endpoint)."""

    token_url: str
    client_id: str
    client_secret: SecretStr
    scope: str | None = None
    _cache: _TokenCache = field(default_factory=_TokenCache)
    refreshable = True

    async def headers(self, http: httpx.AsyncClient, base_url: str) -> dict[str, str]:
        if not self._cache.valid():
            form = {"grant_type": "client_credentials"}
            if self.scope:
                form["scope"] = self.scope
            raw = f"{self.client_id}:{self.client_secret.get_secret_value()}".encode()
            basic = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
            token, ttl = await _request_token(http, self.token_url, form, basic)
            self._cache = _TokenCache(token, time.monotonic() + ttl)
        return {"Authorization": f"Bearer {self._cache.token}"}

    def invalidate(self) -> None:
        self._cache = _TokenCache()

    def __repr__(self) -> str:
        return f"ClientCredentials(client_id={self.client_id!r}, client_secret=**********)"


@dataclass(repr=False)
class SmartBackendServices:
    """SMART Backend Services: a signed JWT assertion instead of a secret
    (https://hl7.org/fhir/smart-app-launch/backend-services.html)."""

    client_id: str
    private_key_pem: SecretStr
    scope: str = "system/*.read"
    key_id: str | None = None
    algorithm: str = "RS384"
    token_url: str | None = None
    _cache: _TokenCache = field(default_factory=_TokenCache)
    refreshable = True

    async def _discover(self, http: httpx.AsyncClient, base_url: str) -> str:
        if self.token_url:
            return self.token_url
        where = "/.well-known/smart-configuration"
        status, content = await _capped(http, f"the server's {where}", "GET", f"{base_url}{where}")
        if status != 200:
            raise AuthError(f"no SMART configuration at the server (HTTP {status})")
        endpoint = (_json_object(content) or {}).get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            fix = "set the token URL in the server's auth settings (token_url)"
            raise AuthError(f"the server's {where} names no token_endpoint (an http(s) URL); {fix}")
        self.token_url = endpoint
        return self.token_url

    def assertion(self, token_url: str) -> str:
        import jwt

        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_url,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        }
        headers = {"kid": self.key_id} if self.key_id else None
        key = self.private_key_pem.get_secret_value()
        return jwt.encode(claims, key, algorithm=self.algorithm, headers=headers)

    async def headers(self, http: httpx.AsyncClient, base_url: str) -> dict[str, str]:
        if not self._cache.valid():
            url = await self._discover(http, base_url)
            form = {
                "grant_type": "client_credentials",
                "scope": self.scope,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": self.assertion(url),
            }
            token, ttl = await _request_token(http, url, form, {})
            self._cache = _TokenCache(token, time.monotonic() + ttl)
        return {"Authorization": f"Bearer {self._cache.token}"}

    def invalidate(self) -> None:
        self._cache = _TokenCache()

    def __repr__(self) -> str:
        return f"SmartBackendServices(client_id={self.client_id!r}, private_key=**********)"
