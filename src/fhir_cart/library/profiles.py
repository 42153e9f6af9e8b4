"""Profile choices and base URLs (``mappings/profiles.yaml``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from fhir_cart.errors import ConfigError
from fhir_cart.library.yamlfile import read_yaml

__all__ = ["Profiles", "load_profiles"]


class Profiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    profiles: dict[str, str]
    extension_base: str
    identifier_base: str
    data_absent_reason: str
    """URL of the core extension that says why a required element has no value."""
    normalization_basis: str
    """URL of mCODE's extension naming the basis of a normalised dose."""


def load_profiles(path: Path) -> Profiles:
    raw = read_yaml(path, "profiles file")
    try:
        return Profiles.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"cannot load profiles file {path}: {exc}") from exc
