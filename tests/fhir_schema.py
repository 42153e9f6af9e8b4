"""Validate resources against the HL7 FHIR R4 JSON Schema (independent of fhir.resources)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft6Validator


class SchemaChecker:
    def __init__(self, path: Path) -> None:
        self.schema = orjson.loads(path.read_bytes())

    @cache  # noqa: B019 - one checker per session
    def _validator(self, resource_type: str) -> Draft6Validator:
        wrapper = {
            "$schema": "http://json-schema.org/draft-06/schema#",
            "definitions": self.schema["definitions"],
            "$ref": f"#/definitions/{resource_type}",
        }
        return Draft6Validator(wrapper)

    def errors(self, resource: dict[str, Any]) -> list[str]:
        validator = self._validator(str(resource["resourceType"]))
        return [
            f"{resource['resourceType']} at {'/'.join(map(str, e.absolute_path))}: "
            f"{e.message[:300]}"
            for e in validator.iter_errors(resource)
        ]
