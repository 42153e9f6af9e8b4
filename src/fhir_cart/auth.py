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
from typing import Protocol

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


async def _request_token(
    http: httpx.AsyncClient, url: str, form: dict[str, str], headers: dict[str, str]
) -> tuple[str, float]:
    response = await http.post(url, data=form, headers=headers)
    if response.status_code != 200:
        raise AuthError(f"token endpoint refused the credentials (HTTP {response.status_code})",
                        status=response.status_code)  # fmt: skip
    try:
        body = orjson.loads(response.content)
        return str(body["access_token"]), float(body.get("expires_in", 300))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
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
        response = await http.get(f"{base_url}/.well-known/smart-configuration")
        if response.status_code != 200:
            raise AuthError(f"no SMART configuration at the server (HTTP {response.status_code})")
        self.token_url = str(orjson.loads(response.content)["token_endpoint"])
        return self.token_url

    def assertion(self, token_url: str) -> str:
        import jwt

        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": token_url,
                  "exp": now + 300, "jti": str(uuid.uuid4())}  # fmt: skip
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
