"""Records held for a whole build, in less memory.

A pydantic model keeps, per instance, the set of the fields it was given
(``__pydantic_fields_set__``). Records read back from a work folder or an extract were given
every field, so each event's ``When`` and ``Value`` carries a set of all its field names:
measured on the truth data (benchmarks/results/registry.md), 4.1 KB of the 7 KB a sealed
record takes, about 500 MB at 100,000 persons. The records are frozen (no attribute can be
set, the only way pydantic adds to the set in place) and ``model_copy`` copies the set
before it updates it, so records whose sets are equal can share one set object: nothing
they say or do changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from fhir_cart.registry.extract import RecordKeys

__all__ = ["FieldSets", "Tokens"]


class FieldSets:
    """One set object per model type and set of given fields, shared by every record of a
    build that has them (:meth:`share`)."""

    def __init__(self) -> None:
        self._sets: dict[tuple[type, frozenset[str]], set[str]] = {}

    def share(self, models: Iterable[BaseModel]) -> None:
        """Each frozen model in ``models``, and every model inside it (fields, lists, dicts),
        given the shared set equal to its own."""
        for model in models:
            self._model(model)

    def _model(self, model: BaseModel) -> None:
        if not model.model_config.get("frozen"):
            return  # a model whose attributes can be set adds to its set in place
        given = model.__pydantic_fields_set__
        shared = self._sets.setdefault((type(model), frozenset(given)), given)
        if shared is not given:
            object.__setattr__(model, "__pydantic_fields_set__", shared)
        for value in model.__dict__.values():
            self._value(value)

    def _value(self, value: Any) -> None:
        if isinstance(value, BaseModel):
            self._model(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                self._value(item)
        elif isinstance(value, dict):
            for item in value.values():
                self._value(item)


class Tokens:
    """One string object per keyed token for the build: names that recur (common given and
    family names, their sounds and words) give the same tokens in thousands of records,
    each read back from the work folder as its own string."""

    def __init__(self) -> None:
        self._strings: dict[str, str] = {}

    def share(self, keys: dict[str, RecordKeys] | None) -> dict[str, RecordKeys] | None:
        """The same keys (equal, token by token), their strings shared."""
        if keys is None:
            return None
        return {name: self._keys(k) for name, k in keys.items()}

    def _keys(self, keys: RecordKeys) -> RecordKeys:
        return RecordKeys(
            self._tuple(keys.identifiers),
            {kind: None if t is None else self._tuple(t) for kind, t in keys.names.items()},
        )

    def _tuple(self, tokens: tuple[str, ...]) -> tuple[str, ...]:
        strings = self._strings
        return tuple(strings.setdefault(t, t) if isinstance(t, str) else t for t in tokens)
