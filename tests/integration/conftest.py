"""A real FHIR R4 server (sekmet-fhir) on 127.0.0.1, started and stopped by the tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fhir_cart.testing import SekmetServer


@pytest.fixture
def fhir_server() -> Iterator[str]:
    """A fresh, empty server per test (starts in about a second)."""
    with SekmetServer() as server:
        yield server.base_url
