"""The wheel, installed into a fresh virtualenv, works away from the checkout: it maps the
seed cohort with the mappings it ships, knows its version and writes the OpenAPI document."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import orjson
import pytest

from tests.support import ROOT, SEED_FILE, SEED_MAPPING

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh virtualenv with only the wheel installed; the dependencies come from
    this project's environment through a path file (installing them again takes minutes).
    That path file adds the folder only: the editable install's own .pth there is not read."""
    base = tmp_path_factory.mktemp("installed")
    dist = base / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            str(ROOT),
            "-w",
            str(dist),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("fhir_cart-*.whl")
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return env_dir / "bin"


def _run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_CART_")}
    return subprocess.run(
        [str(bin_dir / "fhir-cart"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_installed_package_maps_the_seed_from_another_folder(
    installed: Path, tmp_path: Path
) -> None:
    where = subprocess.run(
        [str(installed / "python"), "-c", "import fhir_cart; print(fhir_cart.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert str(installed.parent) in where  # the wheel's copy, not the checkout's
    study = tmp_path / "seed.xlsx"
    study.write_bytes(SEED_FILE.read_bytes())
    mapping = tmp_path / "seed.yaml"
    mapping.write_bytes(SEED_MAPPING.read_bytes())
    done = _run(installed, tmp_path, "map", "seed.xlsx", "--mapping", "seed.yaml", "--out", "out")
    assert done.returncode == 0, done.stderr
    assert "7 patients mapped" in done.stdout
    assert (tmp_path / "out" / "ndjson" / "Patient.ndjson").read_text().count("\n") == 7


def test_the_installed_package_has_a_version_and_writes_openapi_anywhere(
    installed: Path, tmp_path: Path
) -> None:
    version = _run(installed, tmp_path, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("fhir-cart 0.")
    done = _run(installed, tmp_path, "openapi")
    assert done.returncode == 0, done.stderr
    document = orjson.loads((tmp_path / "api" / "openapi.json").read_bytes())
    assert document == orjson.loads((ROOT / "api" / "openapi.json").read_bytes())
