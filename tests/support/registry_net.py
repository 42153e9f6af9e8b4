"""The two-centre registry of tests/data/registry_net, installed where the service finds
registries by name (``<data_dir>/registries/net.yaml``), for the workbench's registry tests
(unit and browser)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support import FIXTURES, ROOT

__all__ = ["REGISTRY_KEY", "install_net"]

REGISTRY_KEY = "net-registry-key-0123456789abcdef0123"


def install_net(data_dir: Path) -> Path:
    """Copies the registry file, its centres' files and mappings; the registry file."""
    folder = data_dir / "registries"
    (folder / "net").mkdir(parents=True, exist_ok=True)
    source = ROOT / "tests" / "data" / "registry_net"
    shutil.copy(source / "net.yaml", folder / "net.yaml")
    for name in ("berlin.csv", "london.csv"):
        shutil.copy(source / "net" / name, folder / "net" / name)
    for centre in ("berlin", "london"):
        shutil.copy(FIXTURES / "registry" / "mappings" / f"{centre}.yaml", folder / "net")
    return folder / "net.yaml"
