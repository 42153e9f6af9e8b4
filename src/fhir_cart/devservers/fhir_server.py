"""Run real FHIR R4 servers on 127.0.0.1 for tests and the demo.

Two independent implementations, so that nothing depends on one server's quirks:

- ``sekmet-fhir`` (Python, SQLite), in a virtualenv of its own (it pins its own
  fhir.resources), made on first use. Settings follow ../shared/TESTING.md: ``host:
  127.0.0.1`` (it listens on every interface otherwise), a fresh ``data_dir``, and the
  built-in simulator off.
- Medplum's FHIR router on its in-memory repository (Node), see
  :mod:`fhir_cart.devservers.medplum_server`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
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

__all__ = [
    "SEKMET_VERSION",
    "LocalFhirServer",
    "SekmetServer",
    "default_venv",
    "ensure_sekmet",
    "free_port",
    "port_in_use",
    "start_detached",
    "stop_detached",
]

SEKMET_VERSION = "0.1.1"


def cache_dir(name: str) -> Path:
    """``.cache/<name>`` in a checkout, else ``~/.cache/fhir-cart/<name>``."""
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").exists():
        return checkout / ".cache" / name
    return Path.home() / ".cache" / "fhir-cart" / name


def default_venv() -> Path:
    env = os.environ.get("FHIR_CART_SEKMET_VENV")
    return Path(env) if env else cache_dir("sekmet-venv")


def ensure_sekmet(venv: Path | None = None) -> Path:
    """Path of the ``sekmet`` executable, installing it in its own virtualenv if needed."""
    venv = venv or default_venv()
    exe = venv / "bin" / "sekmet"
    if exe.exists():
        return exe
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        f"sekmet-fhir=={SEKMET_VERSION}",
    ]
    # pip's output (dozens of "Location ... is ignored" warnings on some machines) is shown
    # only when the install fails
    done = subprocess.run(pip, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"installing sekmet-fhir failed:\n{done.stdout}{done.stderr}")
    if not exe.exists():
        raise RuntimeError(f"sekmet-fhir installed but {exe} is missing")
    return exe


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalFhirServer:
    """A server process on 127.0.0.1: ``with Server() as server: server.base_url``,
    started fresh (empty) and stopped on exit."""

    name = "fhir"

    def __init__(self, *, port: int | None = None, startup_timeout: float = 60.0) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"
        self.timeout = startup_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.log_path = self.workdir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.detached = False

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that start the server."""
        raise NotImplementedError

    def start(self) -> LocalFhirServer:
        argv, env = self.command()
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.detached,
            )
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

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self) -> int:
        """Block until the server process ends; its exit status."""
        if self._proc is None:
            return 0
        return self._proc.wait()

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

    def __enter__(self) -> LocalFhirServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


class SekmetServer(LocalFhirServer):
    """sekmet-fhir, with its data in a fresh folder."""

    name = "sekmet"

    def __init__(
        self,
        *,
        venv: Path | None = None,
        extra_settings: dict[str, Any] | None = None,
        port: int | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.exe = ensure_sekmet(venv)
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.extra = extra_settings or {}

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

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [str(self.exe), "serve"], {"SEKMET_CONFIG": str(self._write_settings())}


# -- a server left running between commands (README's Quick start) ----------------------------


_DETACHED: dict[int, subprocess.Popen[bytes]] = {}


def state_dir() -> Path:
    """Where a server left running is noted, whatever the working folder (so that
    ``fhir-server stop`` works from any folder): ``$XDG_STATE_HOME/fhir-cart``, by default
    ``~/.local/state/fhir-cart``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fhir-cart"


def _state_file(state_dir: Path, port: int) -> Path:
    return state_dir / f"fhir-server-{port}.json"


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_detached(server: LocalFhirServer, state_dir: Path) -> str:
    """Start ``server`` in a session of its own, so it outlives this process (and a Ctrl-C in
    this terminal), and note its pid and data folder for :func:`stop_detached`."""
    server.detached = True
    server.start()
    assert server._proc is not None
    state = {
        "pid": server._proc.pid,
        "workdir": str(server.workdir),
        "kind": server.name,
        "base_url": server.base_url,
    }
    state_dir.mkdir(parents=True, exist_ok=True)
    _state_file(state_dir, server.port).write_text(json.dumps(state))
    _DETACHED[server._proc.pid] = server._proc  # this process may stop it again (tests)
    server._proc = None  # leave it running
    return server.base_url


def stop_detached(state_dir: Path, port: int, timeout: float = 10.0) -> str | None:
    """Stop the server :func:`start_detached` left on ``port`` and remove its data; its
    base URL, or None when no server was started there."""
    path = _state_file(state_dir, port)
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    pid = int(state["pid"])
    own = _DETACHED.pop(pid, None)
    try:
        os.kill(pid, signal.SIGTERM)
        if own is not None:
            own.wait(timeout=timeout)
        else:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                os.kill(pid, 0)  # ProcessLookupError once it is gone
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    shutil.rmtree(state["workdir"], ignore_errors=True)
    path.unlink()
    return str(state["base_url"])
