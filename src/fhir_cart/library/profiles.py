"""Profile choices and base URLs (``mappings/profiles.yaml``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fhir_cart.library.yamlfile import load_model

__all__ = ["BoundValues", "Profiles", "load_profiles"]


class BoundValues(BaseModel):
    """A required binding of a profile's value element, with the bound value set expanded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    element: str
    strength: str
    value_set: str
    source: str
    codes: frozenset[str]
    """``<system URL>|<code>`` of every code of the value set."""


class Profiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    profiles: dict[str, str]
    extension_base: str
    identifier_base: str
    data_absent_reason: str
    """URL of the core extension that says why a required element has no value."""
    normalization_basis: str
    """URL of mCODE's extension naming the basis of a normalised dose."""
    cancer_related_reasons: frozenset[str] = frozenset()
    """Words of the ``reason`` attribute that make a drug or procedure cancer-related: only
    with one of them (or no reason) does it claim the cancer profile and point its
    ``reasonReference`` at the cancer diagnosis."""

    guide_extensions: dict[str, str] = Field(default_factory=dict)
    """Name of a published guide (mCODE, US Core, IPS, FHIR R4 core) -> the URL base of its
    extensions: an unread extension under one is named as that guide's, not a study's."""

    bound_values: dict[str, BoundValues] = Field(default_factory=dict)
    """Profile key -> the required binding its value must meet (a concept claiming the
    profile codes every word of its value set inside it)."""

    def guide_of(self, url: str) -> str | None:
        """The published guide whose extension ``url`` is (longest base first), or None."""
        found = [(len(b), name) for name, b in self.guide_extensions.items() if url.startswith(b)]
        return max(found)[1] if found else None

    def cancer_related(self, reason: object) -> bool:
        """Whether an event given for this ``reason`` (a word) is about the cancer."""
        return reason in self.cancer_related_reasons


def load_profiles(path: Path) -> Profiles:
    return load_model(path, Profiles, "profiles file")
