"""The README's Quick start runs as written: every command in it, in order, from a folder
with the checkout's fixtures and mappings (port 8080 swapped for a free one: other test
runs share this machine)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fhir_cart.devservers.fhir_server import free_port
from tests.support import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SKIPPED = ("bash scripts/setup", "source ")  # set-up of this very environment


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return bash_commands(text.split("## Quick start", 1)[1].split("\n## ", 1)[0])


def bash_commands(section: str) -> list[str]:
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command and not command.startswith("#") and not command.startswith(SKIPPED):
                lines.append(command)
    return lines


def _env_and_folder(tmp_path: Path) -> dict[str, str]:
    for name in ("fixtures", "mappings"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_CART_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    return env


def _run_all(commands: list[str], cwd: Path, env: dict[str, str], port: str = "8080") -> None:
    for command in commands:
        done = subprocess.run(
            command.replace("8080", port),
            shell=True,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"


def test_cli_reference_examples_run_as_written(tmp_path: Path) -> None:
    commands = bash_commands((ROOT / "docs" / "cli.md").read_text())
    assert len(commands) >= 2
    _run_all(commands, tmp_path, _env_and_folder(tmp_path))


def test_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    commands = quick_start_commands()
    assert any(c.startswith("fhir-cart fhir-server start") for c in commands)
    assert any(c.startswith("fhir-cart push") for c in commands)
    env = _env_and_folder(tmp_path)
    port = str(free_port())
    try:
        _run_all(commands, tmp_path, env, port)
    finally:
        subprocess.run(
            ["fhir-cart", "fhir-server", "stop", "--port", port],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            check=False,
        )
    assert (tmp_path / "out" / "pulled" / "study.xlsx").exists() or list(
        (tmp_path / "out" / "pulled").glob("*.xlsx")
    )
    assert list((tmp_path / "fhir-cart-data").glob("fhir-server-*.json")) == []  # stopped
