"""Real FHIR R4 servers on 127.0.0.1, started and stopped by the tests.

``fhir_server`` runs each test against both implementations (sekmet-fhir and Medplum's FHIR
router), so nothing may depend on one server's quirks; ``sekmet_server`` is for what only
sekmet offers (Bulk Data ``$export``, SMART Backend Services on the server side).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fhir_cart.devservers import SERVERS, SekmetServer


@pytest.fixture(params=sorted(SERVERS))
def fhir_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty server per test (each starts in about a second)."""
    with SERVERS[request.param]() as server:
        yield server.base_url


@pytest.fixture
def sekmet_server() -> Iterator[str]:
    with SekmetServer() as server:
        yield server.base_url
