"""Run the real FHIR R4 server ``sekmet-fhir`` on 127.0.0.1 for tests and the demo.

It lives in a virtualenv of its own (it pins its own fhir.resources), made on first use.
Settings follow ../shared/TESTING.md: ``host: 127.0.0.1`` (it listens on every interface
otherwise), a fresh ``data_dir``, and the built-in simulator off.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

__all__ = ["SEKMET_VERSION", "SekmetServer", "default_venv", "ensure_sekmet"]

SEKMET_VERSION = "0.1.1"


def default_venv() -> Path:
    env = os.environ.get("FHIR_CART_SEKMET_VENV")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").exists():
        return checkout / ".cache" / "sekmet-venv"
    return Path.home() / ".cache" / "fhir-cart" / "sekmet-venv"


def ensure_sekmet(venv: Path | None = None) -> Path:
    """Path of the ``sekmet`` executable, installing it in its own virtualenv if needed."""
    venv = venv or default_venv()
    exe = venv / "bin" / "sekmet"
    if exe.exists():
        return exe
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
           "--disable-pip-version-check", f"sekmet-fhir=={SEKMET_VERSION}"]  # fmt: skip
    subprocess.run(pip, check=True)
    if not exe.exists():
        raise RuntimeError(f"sekmet-fhir installed but {exe} is missing")
    return exe


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SekmetServer:
    """``with SekmetServer() as server: server.base_url`` — started fresh, stopped on exit."""

    def __init__(
        self,
        *,
        venv: Path | None = None,
        extra_settings: dict[str, Any] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.exe = ensure_sekmet(venv)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"
        self.extra = extra_settings or {}
        self.timeout = startup_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="sekmet-"))
        self.log_path = self.workdir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _write_settings(self) -> Path:
        settings = {
            "base_url": self.base_url,
            "host": "127.0.0.1",
            "port": self.port,
            "data_dir": str(self.workdir / "data"),
            "simulator": {"enabled": False},
            "log_inbound": False,
            **self.extra,
        }
        path = self.workdir / "sekmet.yaml"
        path.write_text(yaml.safe_dump(settings))
        return path

    def start(self) -> SekmetServer:
        config = self._write_settings()
        env = {**os.environ, "SEKMET_CONFIG": str(config)}
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [str(self.exe), "serve"], cwd=self.workdir, env=env, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.base_url}/metadata", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"FHIR server did not start at {self.base_url}:\n{tail}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SekmetServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
