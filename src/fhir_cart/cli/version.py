"""The installed package's version (what ``fhir-cart --version`` prints)."""

from __future__ import annotations

__all__ = ["package_version"]


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fhir-cart")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"
