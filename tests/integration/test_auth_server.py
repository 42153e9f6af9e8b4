"""SMART Backend Services and a static bearer token against a real server (sekmet-fhir's own
authorisation server): push and pull through it, a token that expires mid-run, one re-auth."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from pydantic import SecretStr

import fhir_cart.auth
import fhir_cart.sync.pull
from fhir_cart.cache import open_cache
from fhir_cart.cli import main
from fhir_cart.devservers import SekmetServer
from fhir_cart.errors import AuthError
from fhir_cart.mappers.context import MappingContext
from fhir_cart.records import Case
from fhir_cart.settings import AuthSettings, ServerSettings
from fhir_cart.sync.jobs import PullRequest, run_pull, run_push
from fhir_cart.sync.pull import PullSelection
from tests.integration.test_sync import SEED_QUERY, by_id, expected_totals, written
from tests.support import SEED_FILE, SEED_MAPPING

pytestmark = pytest.mark.integration
CLIENT = "fhir-cart-tests"
TOKEN_LIFETIME_S = 2


def _key_pair(tmp_path: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / "client.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = tmp_path / "client.pub.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )
    return private, public


@pytest.fixture(params=["public_key", "jwks"])
def smart_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """sekmet's SMART clients carry a public key file or a JWKS."""
    private, public = _key_pair(tmp_path)
    client: dict[str, Any] = {"client_id": CLIENT, "scopes": "system/*.*"}
    if request.param == "public_key":
        client["public_key_path"] = str(public)
    else:
        key = serialization.load_pem_public_key(public.read_bytes())
        jwk = json.loads(RSAAlgorithm.to_jwk(key))
        client["jwks"] = {"keys": [{**jwk, "kid": "test-1", "alg": "RS384", "use": "sig"}]}
    auth = {
        "types": ["smart", "bearer"],
        "tokens": ["static-test-token"],
        "smart_clients": [client],
        "token_lifetime": TOKEN_LIFETIME_S,
    }
    with SekmetServer(extra_settings={"server_auth": auth}) as server:
        yield server.base_url, private


class _TokenRequests:
    def __init__(self) -> None:
        self.count = 0
        self.real = fhir_cart.auth._request_token

    async def __call__(self, *args: Any) -> tuple[str, float]:
        self.count += 1
        return await self.real(*args)


def test_push_and_pull_with_smart_backend_services_and_a_token_that_expires(
    smart_server: tuple[str, Path],
    tmp_path: Path,
    ctx: MappingContext,
    seed_cases: list[Case],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client's clock is frozen (it believes its token fresh); the server's is not, so the
    token really expires part-way through the pull: the server answers 401, the client asks
    for one new token and goes on."""
    base, private = smart_server
    requests = _TokenRequests()
    monkeypatch.setattr(fhir_cart.auth, "_request_token", requests)
    monkeypatch.setattr(fhir_cart.auth, "_EARLY", 0.0)
    frozen = time.monotonic()
    monkeypatch.setattr(fhir_cart.auth, "time", _FrozenMonotonic(frozen))
    auth = AuthSettings(
        type="smart_backend",
        client_id=CLIENT,
        private_key_file=private,
        scope="system/*.read system/*.write",
    )
    server = ServerSettings(base_url=base, auth=auth)
    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        _, report = asyncio.run(run_push(cases=seed_cases, ctx=ctx, server=server, cache=cache))
        assert report is not None
        assert report.failures == []
        assert written(report) == sum(expected_totals(ctx, seed_cases).values())
        assert requests.count == 1

        searched = fhir_cart.sync.pull.matches

        async def wait_out_the_token(client: Any, rtype: str, params: dict[str, str]) -> Any:
            if rtype == "Condition":  # mid-pull, after the Patient search, same client and token
                time.sleep(TOKEN_LIFETIME_S + 1)
            return await searched(client, rtype, params)

        # the other types' searches go at the same time, all with the expired token
        monkeypatch.setattr(fhir_cart.sync.pull, "matches", wait_out_the_token)
        selection = PullSelection(kind="search", query=SEED_QUERY)
        pulled = asyncio.run(run_pull(PullRequest(selection), ctx=ctx, server=server, cache=cache))
    finally:
        cache.close()
    assert by_id(pulled.cases) == by_id(seed_cases)
    # the pull's own token, then one more when the server said it had expired: not per request
    assert requests.count == 3


class _FrozenMonotonic:
    def __init__(self, at: float) -> None:
        self.at = at

    def monotonic(self) -> float:
        return self.at

    def time(self) -> float:
        return time.time()


def test_a_static_bearer_token_pushes_and_a_wrong_one_is_refused(
    smart_server: tuple[str, Path], tmp_path: Path, ctx: MappingContext, seed_cases: list[Case]
) -> None:
    base, _ = smart_server
    cache = open_cache(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        good = AuthSettings(type="bearer", token=SecretStr("static-test-token"))
        server = ServerSettings(base_url=base, auth=good)
        _, report = asyncio.run(run_push(cases=seed_cases[:2], ctx=ctx, server=server, cache=cache))
        assert report is not None
        assert report.failures == []
        bad = ServerSettings(
            base_url=base, auth=AuthSettings(type="bearer", token=SecretStr("wrong"))
        )
        # refused credentials are not about any one bundle: the push stops at the first
        # refusal instead of sending every bundle to be refused (issue 11)
        with pytest.raises(AuthError) as refused:
            asyncio.run(run_push(cases=seed_cases[2:], ctx=ctx, server=bad, cache=cache))
        (run,) = [r for r in cache.list_runs() if r.status != "succeeded"]
        assert run.status == "interrupted"
    finally:
        cache.close()
    assert refused.value.status == 401


def test_cli_reports_a_refusal_once_with_a_hint(
    smart_server: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every resource refused for one reason: one line for the cause, not one per resource."""
    base, _ = smart_server
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("FHIR_CART_SERVERS__LOCAL__BASE_URL", base)
    monkeypatch.setenv("FHIR_CART_SERVERS__LOCAL__AUTH__TYPE", "bearer")
    monkeypatch.setenv("FHIR_CART_SERVERS__LOCAL__AUTH__TOKEN", "wrong")
    cache = f"sqlite:///{tmp_path / 'c.sqlite'}"
    args = ["push", str(SEED_FILE), "-m", str(SEED_MAPPING), "--server", "local", "--cache", cache]
    assert main(args) == 6  # the server cannot be used with these credentials: one error
    err = capsys.readouterr().err
    assert err.count("error:") == 1
    assert "401" in err
    assert "Traceback" not in err
    assert "wrong" not in err  # the token is never printed
