"""Profile choices and base URLs (``mappings/profiles.yaml``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from fhir_cart.library.yamlfile import load_model

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
    return load_model(path, Profiles, "profiles file")
