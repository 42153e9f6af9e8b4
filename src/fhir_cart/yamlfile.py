"""Reading the project's YAML files (terminology, concept library, study and registry files):
one place that turns an unreadable file into a ConfigError naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fhir_cart.errors import ConfigError

__all__ = ["read_yaml"]


def read_yaml(path: Path, what: str) -> Any:
    """The parsed YAML of ``path`` (safe loader); ConfigError 'cannot read <what> <path>: ...'
    when the file is missing, unreadable or not YAML. Checking the shape is the caller's."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
