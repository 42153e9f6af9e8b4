"""When, Value and Event made from fields the reader has checked already, skipping
pydantic's second pass over the same values when it would change nothing."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any, TypeVar

from pydantic import BaseModel

from fhir_cart.records import COMPARATORS, Event, Precision, Value, When

# -- records built once ----------------------------------------------------------------------
#
# The reader has read and checked every field already; pydantic's pass over the same values
# is skipped when each field is exactly what it would accept unchanged (type, range, length,
# pattern, no surrounding whitespace to strip). The model's own check (its model validator)
# still runs, and anything else goes through pydantic, for its error and message.

_KEY_TEXT = re.compile(r"[a-z][a-z0-9_]*")
_ID_TEXT = re.compile(r"[A-Za-z0-9_\-\.]+")
_NOT_ID = re.compile(r"[^A-Za-z0-9_.\-]+")
_SCALARS = (str, int, float, bool)


_CHECK = "_check"
_Model = TypeVar("_Model", When, Value, Event)


_DEFAULTS: dict[type[BaseModel], dict[str, Any]] = {
    model: {name: info.default for name, info in model.model_fields.items()}
    for model in (When, Value, Event)
}
"""Each field with its default, in declared order (Event.attributes is always given)."""


def _construct(model: type[_Model], fields: dict[str, Any]) -> _Model:
    """``model.model_construct(**fields)`` as pydantic does it, without its general loop."""
    made = model.__new__(model)
    values = dict(_DEFAULTS[model])
    values.update(fields)
    object.__setattr__(made, "__dict__", values)
    object.__setattr__(made, "__pydantic_fields_set__", set(fields))
    object.__setattr__(made, "__pydantic_extra__", None)
    object.__setattr__(made, "__pydantic_private__", None)
    return made


def _checked(model: _Model) -> _Model:
    """The model after its own model validator (``_check``), which raises ValueError."""
    getattr(model, _CHECK)()
    return model


def _day(value: Any) -> bool:
    return value is None or (type(value) is int and -36500 <= value <= 36500)


def _text(value: Any, longest: int, shortest: int = 1) -> bool:
    return value is None or (
        type(value) is str and shortest <= len(value) <= longest and value == value.strip()
    )


def _key(value: Any, pattern: re.Pattern[str] = _KEY_TEXT) -> bool:
    return type(value) is str and len(value) <= 64 and pattern.fullmatch(value) is not None


def _finite(value: Any) -> bool:
    return value is None or (type(value) is float and math.isfinite(value))


def _make_when(
    date: dt.date | None,
    day: int | None,
    anchor: str | None,
    earliest: Any,
    latest: Any,
    precision: Precision = "day",
    stated: tuple[float, str] | None = None,
) -> When:
    fields = {
        "date": date,
        "day": day,
        "anchor": anchor,
        "earliest_day": earliest,
        "latest_day": latest,
    }
    if precision != "day":  # a day is the default: set only what the source said
        fields["precision"] = precision
    if stated is not None:  # weeks or months as written, beside the day
        fields["stated"], fields["stated_unit"] = stated
        return When(**fields)
    if (
        precision == "day"
        and (date is None or type(date) is dt.date)
        and _day(day)
        and _day(earliest)
        and _day(latest)
        and (anchor is None or _key(anchor))
    ):
        try:
            return _checked(_construct(When, fields))
        except ValueError:
            pass
    return When(**fields)


_VALUE_FIELDS: dict[str, Any] = {
    "number": _finite,
    "low": _finite,
    "high": _finite,
    "unit": lambda v: _text(v, 40),
    "comparator": lambda v: v is None or (type(v) is str and v in COMPARATORS),
    "code": lambda v: _text(v, 64),
    "boolean": lambda v: v is None or type(v) is bool,
    "text": lambda v: _text(v, 1000),
}


def _make_value(**fields: Any) -> Value:
    if all(_VALUE_FIELDS[k](v) for k, v in fields.items()):
        try:
            return _checked(_construct(Value, fields))
        except ValueError:
            pass
    return Value(**fields)


def _make_event(**fields: Any) -> Event:
    when, end, value = fields["when"], fields["end"], fields["value"]
    attributes = fields["attributes"]
    if (
        _key(fields["event_id"], _ID_TEXT)
        and _key(fields["concept"])
        and (when is None or type(when) is When)
        and (end is None or type(end) is When)
        and (value is None or type(value) is Value)
        and _text(fields["source_text"], 1000, 0)
        and _text(fields["origin"], 64, 0)
        and _text(fields["assumed"], 1000)
        and _text(fields["status"], 200, 0)
        and all(
            _text(k, len(k), 0)
            and type(v) in _SCALARS
            and (type(v) is not str or _text(v, len(v), 0))
            for k, v in attributes.items()
        )
    ):
        try:
            return _checked(_construct(Event, fields))
        except ValueError:
            pass
    return Event(**fields)
