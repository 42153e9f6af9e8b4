"""Connecting to a FHIR server as the settings say: the auth, the client, and what the
server can do (its CapabilityStatement, corrected by settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from fhir_cart.auth import (
    Auth,
    BasicAuth,
    BearerToken,
    ClientCredentials,
    NoAuth,
    SmartBackendServices,
)
from fhir_cart.client import FhirClient
from fhir_cart.errors import ConfigError, RetryableError, ServerUnreachable
from fhir_cart.settings import AuthSettings, ServerSettings
from fhir_cart.sync.capabilities import ServerCapabilities

__all__ = ["auth_from_settings", "client_for", "discover"]


def _secret(value: SecretStr | None, what: str) -> SecretStr:
    if value is None:
        raise ConfigError(f"server auth needs {what}")
    return value


def auth_from_settings(auth: AuthSettings) -> Auth:
    if auth.type == "none":
        return NoAuth()
    if auth.type == "basic":
        return BasicAuth(auth.username or "", _secret(auth.password, "password"))
    if auth.type == "bearer":
        return BearerToken(_secret(auth.token, "token"))
    if auth.type == "client_credentials":
        if not auth.token_url or not auth.client_id:
            raise ConfigError("client_credentials auth needs token_url and client_id")
        secret = _secret(auth.client_secret, "client_secret")
        return ClientCredentials(auth.token_url, auth.client_id, secret, auth.scope)
    if not auth.client_id or not auth.private_key_file:
        raise ConfigError("smart_backend auth needs client_id and private_key_file")
    key = SecretStr(Path(auth.private_key_file).read_text(encoding="utf-8"))
    return SmartBackendServices(
        client_id=auth.client_id,
        private_key_pem=key,
        scope=auth.scope or "system/*.read",
        key_id=auth.key_id,
        algorithm=auth.algorithm,
        token_url=auth.token_url,
    )


async def discover(client: FhirClient, server: ServerSettings) -> ServerCapabilities:
    """The server's capabilities: its CapabilityStatement, corrected by settings."""
    try:
        statement = await client.capabilities()
    except RetryableError as exc:
        if exc.status is None:  # no HTTP answer at all: connection refused, DNS, timeout
            raise ServerUnreachable(server.base_url, exc.message.rsplit(": ", 1)[-1]) from exc
        raise
    return ServerCapabilities.from_statement(
        statement,
        bundle_type=server.bundle_type,
        max_transaction_entries=server.max_transaction_entries,
    )


def client_for(server: ServerSettings) -> FhirClient:
    return FhirClient(
        base_url=server.base_url,
        auth=auth_from_settings(server.auth),
        timeout=server.timeout,
        max_retries=server.max_retries,
        max_pages=server.max_pages_per_pull,
        max_entries_per_page=server.max_entries_per_page,
        max_response_bytes=server.max_response_bytes,
        allow_foreign_export_files=server.allow_foreign_export_files,
    )
