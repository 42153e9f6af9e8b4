"""Where a registry's inputs come from, as Provenance cites them and as a rebuild compares
them: each centre's file and mapping (or its extract's manifest), hashed."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

from fhir_cart.errors import ConfigError
from fhir_cart.registry import fhir
from fhir_cart.registry.definition import RegistryDef
from fhir_cart.registry.extract import read_manifest

__all__ = ["centre_sources", "input_hashes", "sha256_of", "source_info"]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _mtime(path: Path) -> float:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return max((f.stat().st_mtime for f in files), default=0.0)


def centre_sources(definition: RegistryDef) -> dict[str, fhir.SourceInfo]:
    found = {}
    for centre in definition.centres:
        if centre.extract is not None:
            found[centre.id] = _extract_source(centre.id, definition.resolve(centre.extract))
            continue
        assert centre.data is not None
        assert centre.mapping is not None
        data, mapping = definition.resolve(centre.data), definition.resolve(centre.mapping)
        found[centre.id] = source_info(centre.id, data, mapping)
    return found


def source_info(centre: str, data: Path, mapping: Path) -> fhir.SourceInfo:
    """A centre file and its mapping as Provenance cites them."""
    for path in (data, mapping):
        if not path.exists():
            raise ConfigError(f"centre {centre}: {path} does not exist")
    newest = float(os.environ.get("SOURCE_DATE_EPOCH") or max(_mtime(data), _mtime(mapping)))
    recorded = dt.datetime.fromtimestamp(int(newest), tz=dt.UTC).isoformat()
    return fhir.SourceInfo(
        centre, data.name, sha256_of(data), mapping.name, sha256_of(mapping), recorded
    )


def _extract_source(centre: str, path: Path) -> fhir.SourceInfo:
    """What the extract's manifest says of the centre's file (the build never sees it)."""
    if not path.exists():
        raise ConfigError(f"centre {centre}: extract {path} does not exist")
    source = read_manifest(path)["source"]
    return fhir.SourceInfo(
        centre, "", source["file_sha256"], "", source["mapping_sha256"], source["recorded"]
    )


def input_hashes(sources: dict[str, fhir.SourceInfo]) -> dict[str, str]:
    return {
        c: hashlib.sha256(f"{s.file_sha256}:{s.mapping_sha256}".encode()).hexdigest()
        for c, s in sorted(sources.items())
    }
