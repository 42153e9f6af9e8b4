"""One settings class, read from the environment (``FHIR_CART_...``) and an optional YAML file.

Server credentials live here, never on the command line: name a server in settings and pass
its name (or its URL, when it needs no credentials) to ``push``/``pull``.

Example ``fhir-cart.yaml`` (path in ``FHIR_CART_CONFIG``, default ``./fhir-cart.yaml``)::

    cache_url: sqlite:///fhir-cart-data/cache.sqlite
    servers:
      hospital:
        base_url: https://fhir.example-hospital.org/R4
        auth: {type: client_credentials, token_url: https://.../token,
               client_id: study-42, client_secret: "..."}

Environment: ``FHIR_CART_SERVERS__HOSPITAL__AUTH__CLIENT_SECRET=...`` overrides one key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

__all__ = ["AuthSettings", "ServerSettings", "Settings", "UserSettings", "load_settings"]


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["none", "basic", "bearer", "client_credentials", "smart_backend"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    token_url: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    scope: str | None = None
    private_key_file: Path | None = None
    key_id: str | None = None
    algorithm: str = "RS384"


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str
    auth: AuthSettings = Field(default_factory=AuthSettings)
    timeout: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=10)
    bundle_size: int = Field(default=100, ge=1, le=5000)
    concurrency: int = Field(default=4, ge=1, le=64)
    # What a server may make a pull do (a hostile or broken server otherwise pages forever,
    # or sends pages of any size): exceeding one stops the pull with a clear error.
    max_pages_per_pull: int = Field(default=10_000, ge=1)
    max_entries_per_page: int = Field(default=1_000, ge=1)
    max_resources_per_pull: int = Field(default=1_000_000, ge=1)
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Bulk export files on another origin are fetched (without credentials) only when the
    # manifest says requiresAccessToken: false and this is set.
    allow_foreign_export_files: bool = False
    # What a push does with records removed from the study file (of patients still in it):
    # mark them entered-in-error (AdverseEvent: deleted, R4 has no such status), or delete.
    on_removed: Literal["entered-in-error", "delete"] = "entered-in-error"
    bundle_type: Literal["auto", "transaction", "batch"] = "auto"
    """``auto``: transactions where the CapabilityStatement declares them, else batches."""
    max_transaction_entries: int | None = Field(default=None, ge=1)
    """The server's largest transaction, where known (otherwise learned from a refusal)."""
    search_params: dict[str, list[str]] = Field(default_factory=dict)
    """Search parameters per resource type, replacing what the CapabilityStatement says."""

    @field_validator("base_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        return value.rstrip("/")


class UserSettings(BaseModel):
    """A person or client of the web service, with its scope (issue 22): ``centre`` sees
    only its own centre's uploads, jobs and outputs; ``registry`` the registry's jobs and
    their pseudonymised outputs; ``admin`` everything. Signs in with ``api_key`` (API and
    pages) or ``password_hash`` (pages; make one with ``python -m
    fhir_cart.service.access``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@\-]*$")
    role: Literal["centre", "registry", "admin"]
    centre: str | None = Field(default=None, max_length=64, pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    api_key: SecretStr | None = None
    password_hash: SecretStr | None = None

    @model_validator(mode="after")
    def _centre_named(self) -> UserSettings:
        if (self.role == "centre") != (self.centre is not None):
            raise ValueError(f"user {self.name!r}: a centre user names its centre, others none")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FHIR_CART_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Path("fhir-cart-data")
    cache_url: str | None = None
    mappings_dir: Path | None = None
    servers: dict[str, ServerSettings] = Field(default_factory=dict)
    api_keys: list[SecretStr] = Field(default_factory=list)
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    # Request bodies other than uploads (job requests are a few hundred bytes).
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # An .xlsx is a zip: its members may unpack to at most this many bytes (zip bombs).
    max_unpacked_bytes: int = Field(default=100 * 1024 * 1024, gt=0)
    # Uploaded study files (and their folders) are deleted this many hours after upload.
    upload_ttl_hours: float = Field(default=24.0, gt=0)
    # Rejects of one upload or job listed and stored (all are counted): a broken file of
    # 100,000 bad rows otherwise fills the cache and the answer.
    max_rejects_reported: int = Field(default=1000, ge=1)
    strict_terminology: bool = False
    # A pulled resource with no coding at all is classified by its text (case and spaces
    # aside) only when this is on; its event then says "read from text" in its status.
    classify_by_text: bool = False
    # A worker renews its lease on a job every quarter of this; a job whose worker sent no
    # heartbeat for this long is taken over by any worker.
    job_lease_seconds: float = Field(default=60.0, ge=1.0)
    users: list[UserSettings] = Field(default_factory=list)
    """Scoped keys and sign-ins (``api_keys`` are admins); see docs/service.md."""
    session_hours: float = Field(default=8.0, gt=0)
    """A page sign-in lasts this long without use."""
    registry_key: SecretStr | None = None
    """HMAC key of registry pseudonyms (``FHIR_CART_REGISTRY_KEY``); never in a registry file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = Path(os.environ.get("FHIR_CART_CONFIG", "fhir-cart.yaml"))
        yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=config)
        return (init_settings, env_settings, yaml_source, file_secret_settings)

    def effective_cache_url(self) -> str:
        return self.cache_url or f"sqlite:///{self.data_dir / 'cache.sqlite'}"

    def server(self, name_or_url: str) -> ServerSettings:
        """A configured server by name, or an unauthenticated one by URL."""
        if name_or_url in self.servers:
            return self.servers[name_or_url]
        for server in self.servers.values():
            if server.base_url == name_or_url.rstrip("/"):
                return server
        if name_or_url.startswith(("http://", "https://")):
            return ServerSettings(base_url=name_or_url)
        known = ", ".join(sorted(self.servers)) or "none configured"
        raise KeyError(f"no server named {name_or_url!r} in settings (known: {known})")


def load_settings() -> Settings:
    return Settings()
