"""Reading the project's YAML files (terminology, concept library, study and registry files):
one place that turns an unreadable file into a ConfigError naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fhir_cart.errors import ConfigError

__all__ = ["read_yaml"]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader where PyYAML was built with it (several times faster on the concept
library and terminology, read by every command), else the pure-Python one: same documents."""


def read_yaml(path: Path, what: str) -> Any:
    """The parsed YAML of ``path`` (safe loader); ConfigError 'cannot read <what> <path>: ...'
    when the file is missing, unreadable or not YAML. Checking the shape is the caller's."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 - safe
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
