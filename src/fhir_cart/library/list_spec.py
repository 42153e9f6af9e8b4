"""The ``list:`` of an event spec: a column whose cells are lists (docs/mapping-file.md,
"List cells")."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ListSpec"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class ListSpec(BaseModel):
    """A column whose cells are lists ("CRS 2, ICANS 1"): one event per item."""

    model_config = _STRICT

    column: str = Field(min_length=1)
    separator: str = Field(default=",", min_length=1, max_length=3)
    item: str | None = Field(default=None, min_length=1, max_length=500)
    """A regular expression an item must match whole; its named groups are fields (e.g.
    ``(?P<concept>.+?)\\s+(?P<grade>\\S+)``). Without it an item fills the fields mapped to
    ``column`` as a whole cell would."""

    @model_validator(mode="after")
    def _check(self) -> ListSpec:
        if self.item is not None:
            try:
                compiled = re.compile(self.item)
            except re.error as exc:
                raise ValueError(f"item: {self.item!r} is not a regular expression: {exc}") from exc
            if not compiled.groupindex:
                raise ValueError(
                    f"item: {self.item!r} names no field; use named groups such as (?P<grade>...)"
                )
        return self

    def fields(self) -> tuple[str, ...]:
        return tuple(re.compile(self.item).groupindex) if self.item is not None else ()
