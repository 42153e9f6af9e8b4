"""The installed package's version (what ``fhir-cart --version`` prints).

One source: ``fhir_cart.__version__``, which the build reads too (pyproject.toml's
``[tool.hatch.version]``), so the wheel's metadata and this answer cannot differ. Reading it
costs nothing; ``importlib.metadata`` cost about 50 ms of ``--version``'s start-up."""

from __future__ import annotations

from fhir_cart import __version__

__all__ = ["package_version"]


def package_version() -> str:
    return __version__
