"""``fhir-cart serve`` as a user runs it, for the browser tests: its settings in a YAML
file, on a free port of 127.0.0.1, its output (the server log) in a file the test reads;
stopped when the ``with`` block ends. One helper for every browser test's service."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from fhir_cart.devservers.fhir_server import free_port

__all__ = ["SERVE", "serve"]

SERVE = (
    "import logging, sys; logging.basicConfig(level=logging.WARNING); "
    "logging.getLogger('fhir_cart').setLevel(logging.DEBUG); "
    "sys.argv[0] = 'fhir-cart'; from fhir_cart.cli import entry; entry()"
)
"""``fhir-cart serve`` with every log line of fhir_cart's own written (the CLI shows
warnings only): the test reads all that the service could log."""

STARTING = 60.0
"""Seconds the service is given to answer /health before the test fails with its log."""


@contextmanager
def serve(settings: dict[str, Any], folder: Path) -> Iterator[tuple[str, Path]]:
    """The service with ``settings`` (written to ``folder``/fhir-cart.yaml; it runs in
    ``folder``); its URL and its log file, once it answers /health."""
    config = folder / "fhir-cart.yaml"
    config.write_text(yaml.safe_dump(settings))
    port = free_port()
    env = {**os.environ, "FHIR_CART_CONFIG": str(config)}
    log = folder / "service.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=folder,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + STARTING
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the service did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.2)
            yield url, log
        finally:
            process.terminate()
            process.wait(timeout=20)
