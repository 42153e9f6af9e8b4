"""Property-based fuzzing of the published OpenAPI contract (schemathesis).

Runs against the app built from the same settings a deployment uses (real SQLite cache, no
FHIR server needed: job endpoints only queue work). Every response must conform to the
document and no request may cause a server error.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import positive_data_acceptance

from fhir_cart.cache import open_cache
from fhir_cart.service.app import create_app
from fhir_cart.settings import ServerSettings, Settings
from tests.support import ROOT

pytestmark = pytest.mark.integration

_DATA = Path(__import__("tempfile").mkdtemp(prefix="fhir-cart-fuzz-"))
_CACHE = open_cache(f"sqlite:///{_DATA / 'cache.sqlite'}")
_APP = create_app(
    Settings(
        data_dir=_DATA,
        api_keys=[SecretStr("fuzz-key-0123456789abcdef0123456789")],
        max_upload_bytes=50_000,
        servers={"local": ServerSettings(base_url="http://127.0.0.1:9/fhir")},
    ),
    cache=_CACHE,
    run_workers=False,
)
_APP.state.cache = _CACHE
schema = schemathesis.openapi.from_path(ROOT / "api" / "openapi.json")
schema.app = _APP  # type: ignore[attr-defined]


# Schema-valid requests may still be refused on business rules the schema cannot state (an
# unknown server name, an upload id that does not exist, a file type by suffix): those are
# 4xx problem documents, checked for conformance, not counted as failures.
EXCLUDED = [positive_data_acceptance]


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_contract(case: schemathesis.Case) -> None:
    headers = {"X-API-Key": "fuzz-key-0123456789abcdef0123456789"}
    case.call_and_validate(app=_APP, headers=headers, excluded_checks=EXCLUDED)
