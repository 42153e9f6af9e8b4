"""Type aliases shared by every layer (the ground: imports nothing of fhir_cart)."""

from __future__ import annotations

from typing import Any

__all__ = ["Json", "JsonList", "Number"]

Json = dict[str, Any]
"""A JSON object as parsed: a FHIR resource, an element of one, a Bundle, a response."""

JsonList = list[Json]
"""A list of JSON objects (resources, bundle entries)."""

Number = int | float
"""A number read from a file (YAML, CSV) before it is given a unit."""
