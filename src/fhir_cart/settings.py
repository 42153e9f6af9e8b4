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

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

__all__ = ["AuthSettings", "ServerSettings", "Settings", "load_settings"]


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

    @field_validator("base_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        return value.rstrip("/")


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
    strict_terminology: bool = False
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
