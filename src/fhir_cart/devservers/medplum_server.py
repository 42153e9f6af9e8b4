"""Medplum's FHIR router (``@medplum/fhir-router``) on its in-memory repository, on 127.0.0.1.

A second FHIR server implementation beside sekmet-fhir. The small Node HTTP wrapper
(``medplum_server/server.js``) and its exact npm versions (``package.json``,
``package-lock.json``) ship with fhir_cart; ``npm ci`` installs them into
``.cache/medplum-server`` on first use (``scripts/setup`` does so ahead of the tests).
Version 4.5.2 runs on Node 20; 5.x needs Node 22.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from fhir_cart.devservers.fhir_server import LocalFhirServer, cache_dir

__all__ = ["MEDPLUM_VERSION", "MedplumServer", "ensure_medplum"]

MEDPLUM_VERSION = "4.5.2"
_FILES = ("package.json", "package-lock.json", "server.js")


def default_dir() -> Path:
    env = os.environ.get("FHIR_CART_MEDPLUM_DIR")
    return Path(env) if env else cache_dir("medplum-server")


def ensure_medplum(target: Path | None = None) -> Path:
    """Path of ``server.js`` with its node_modules installed (``npm ci``) beside it."""
    target = target or default_dir()
    target.mkdir(parents=True, exist_ok=True)
    shipped = resources.files("fhir_cart.devservers") / "medplum_server"
    changed = False
    for name in _FILES:
        data = (shipped / name).read_bytes()
        path = target / name
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
            changed = changed or name != "server.js"
    installed = target / "node_modules" / "@medplum" / "fhir-router" / "package.json"
    if changed or not installed.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("the Medplum test server needs Node.js 20 and npm on PATH")
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=target,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"npm ci for the Medplum test server failed:\n{done.stderr}")
    return target / "server.js"


class MedplumServer(LocalFhirServer):
    """Medplum's FHIR router with an empty in-memory repository (all data gone on stop)."""

    name = "medplum"

    def __init__(
        self,
        *,
        install_dir: Path | None = None,
        port: int | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.script = ensure_medplum(install_dir)
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("the Medplum test server needs Node.js 20 on PATH")
        self.node = node
        super().__init__(port=port, startup_timeout=startup_timeout)

    def command(self) -> tuple[list[str], dict[str, str]]:
        argv = [self.node, str(self.script), "--port", str(self.port), "--host", "127.0.0.1"]
        return argv, {"NODE_ENV": "production"}
