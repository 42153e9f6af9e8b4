"""`fhir-cart fhir-server stop` works from any folder (issue 22 item 8): the running server
was noted in the data folder, relative to where `start` ran, so `stop` from elsewhere said
no server was started."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from fhir_cart.cli import main
from fhir_cart.devservers.fhir_server import free_port

pytestmark = pytest.mark.integration


def test_stop_from_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.delenv("FHIR_CART_DATA_DIR", raising=False)
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    port = free_port()
    monkeypatch.chdir(here)
    assert main(["fhir-server", "start", "--port", str(port)]) == 0
    url = f"http://127.0.0.1:{port}/fhir/metadata"
    try:
        assert httpx.get(url, timeout=10).status_code == 200
        monkeypatch.chdir(there)
        assert main(["fhir-server", "stop", "--port", str(port)]) == 0
        assert "stopped the FHIR server" in capsys.readouterr().out
        with pytest.raises(httpx.TransportError):
            httpx.get(url, timeout=2)
        assert main(["fhir-server", "stop", "--port", str(port)]) == 2  # nothing left
    finally:
        main(["fhir-server", "stop", "--port", str(port)])
