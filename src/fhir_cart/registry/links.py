"""A link between two centre records of one patient: what linkage produces, whichever
method found it (kept apart so the splink backend and the linkage module both use it
without importing each other)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Link", "Method"]

Method = Literal["identifier", "probabilistic"]


@dataclass(frozen=True, order=True)
class Link:
    left: str
    right: str
    probability: float
    method: Method
