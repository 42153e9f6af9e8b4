"""Mapping files the service keeps, and the mapping assistant's use cases.

A mapping file a person writes in the assistant or uploads through the API is checked like
any mapping (``load_study_mapping``: every key, concept, word and unit, errors naming the
key, the line and the fix) and kept under the service's data folder, one folder per owner
(a centre's id, or ``admin``) and name, versioned:
``mappings/<owner>/<name>/<name>-v<N>.yaml``.
A version is never overwritten; a new one is the next number.

Called through :class:`fhir_cart.application.Application`.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fhir_cart.errors import ConfigError
from fhir_cart.library.core import names_a_file
from fhir_cart.library.yamlfile import read_yaml
from fhir_cart.private import private_dir

if TYPE_CHECKING:
    from fhir_cart.application import Application
    from fhir_cart.library.study_mapping import StudyMapping

__all__ = ["NAME", "StoredMapping", "check_text", "list_stored", "read_stored", "store"]

NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_VERSION = re.compile(r"^(.+)-v([1-9][0-9]{0,5})\.yaml$")
MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class StoredMapping:
    owner: str
    name: str
    version: int
    path: Path
    size: int
    modified: float


def _root(app: Application) -> Path:
    return app.data_dir / "mappings"


def _check_name(what: str, name: str) -> None:
    if not NAME.match(name):
        raise ConfigError(f"{what} {name!r}: lower-case letters, digits, '-' and '_' only")


def check_text(app: Application, text: bytes, where: str = "mapping file") -> StudyMapping:
    """The mapping in ``text``, checked as ``load_study_mapping`` checks a file (errors name
    the key, line and fix). A kept mapping may name a study of the library by name, never a
    file of the server (``study`` as a path, ``library``)."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{where}: at most {MAX_BYTES} bytes")
    with tempfile.TemporaryDirectory(prefix="fhir-cart-mapping-") as folder:
        path = Path(folder) / "mapping.yaml"
        path.write_bytes(text)
        try:
            _no_server_files(app, read_yaml(path, "mapping file"), where)
            mapping = app.load_mapping(path)
        except ConfigError as exc:
            message = str(exc).replace(f"mapping file {path}", where)
            raise ConfigError(message.replace(str(path), where)) from None
    assert mapping is not None
    return mapping


def _no_server_files(app: Application, raw: object, where: str) -> None:
    """Before anything is read: a kept mapping names no file of the server."""
    if not isinstance(raw, dict):
        return
    if raw.get("library") is not None:
        raise ConfigError(
            f"{where}: library: a kept mapping cannot name a library file; put its concepts "
            "under concepts: in the mapping itself"
        )
    study = raw.get("study")
    if isinstance(study, str) and names_a_file(study):
        raise ConfigError(
            f"{where}: study: name a study of the library ({', '.join(_studies(app))}), not a file"
        )


def _studies(app: Application) -> list[str]:
    return sorted(p.stem for p in (app.mappings_dir / "studies").glob("*.yaml"))


def store(app: Application, owner: str, name: str, text: bytes) -> StoredMapping:
    """Check ``text`` and keep it as the next version of ``owner``'s mapping ``name``."""
    _check_name("owner", owner)
    _check_name("mapping name", name)
    check_text(app, text, f"mapping {name!r}")
    folder = private_dir(_root(app)) / owner / name
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    version = max((v.version for v in _versions(owner, folder)), default=0) + 1
    while True:
        path = folder / f"{name}-v{version}.yaml"
        try:  # O_EXCL: two writers never get the same version
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            version += 1
            continue
        with os.fdopen(handle, "wb") as out:
            out.write(text)
        return _stored(owner, name, version, path)


def _stored(owner: str, name: str, version: int, path: Path) -> StoredMapping:
    stat = path.stat()
    return StoredMapping(owner, name, version, path, stat.st_size, stat.st_mtime)


def _versions(owner: str, folder: Path) -> list[StoredMapping]:
    found = []
    for path in folder.glob("*-v*.yaml"):
        match = _VERSION.match(path.name)
        if match and match.group(1) == folder.name:
            found.append(_stored(owner, folder.name, int(match.group(2)), path))
    return sorted(found, key=lambda m: m.version)


def list_stored(app: Application, owner: str | None) -> list[StoredMapping]:
    """Every kept version of ``owner``'s mappings (None: of every owner), by owner, name,
    version."""
    root = _root(app)
    if not root.is_dir():
        return []
    owners = (
        [root / owner] if owner is not None else sorted(p for p in root.iterdir() if p.is_dir())
    )
    found = []
    for folder in owners:
        if not folder.is_dir() or not NAME.match(folder.name):
            continue
        for named in sorted(p for p in folder.iterdir() if p.is_dir() and NAME.match(p.name)):
            found += _versions(folder.name, named)
    return found


def read_stored(app: Application, owner: str, name: str, version: int | None) -> StoredMapping:
    """One kept version (None: the latest); KeyError when there is none."""
    if not (NAME.match(owner) and NAME.match(name)):
        raise KeyError(name)
    versions = _versions(owner, _root(app) / owner / name)
    if version is not None:
        versions = [v for v in versions if v.version == version]
    if not versions:
        raise KeyError(name)
    return versions[-1]
