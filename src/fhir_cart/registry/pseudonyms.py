"""Keyed pseudonyms and date protection: pure functions of a secret key and the data.

- Identifiers become HMAC-SHA256 pseudonyms (RFC 2104) under the registry's key, each in its
  own namespace (a centre's patient number and a shared national identifier never collide).
  Without the key nobody can recompute a pseudonym from a guessed identifier, and a new key
  gives new pseudonyms everywhere.
- Dates either become days relative to a per-patient anchor event or move by a keyed,
  per-patient offset that is the same for every date of that patient (intervals survive).
- A partial date (only a year or a month, :attr:`When.precision`) is never turned into a
  guessed day: relative to the anchor it is the window of days it may be (and a partial
  anchor widens every window to all the days it may be); shifted by days it would be no year
  or month any more, so in ``shift`` mode an event's partial date becomes that same window
  relative to the anchor (none without an anchor date), and a partial birth date is
  withheld.

The key comes from settings or the environment (:func:`registry_key`), never from the
registry file, and is never written anywhere.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from typing import Literal

from fhir_cart.errors import ConfigError
from fhir_cart.records import Case, Event, PatientRecord, Precision, Scalar, When, date_span

__all__ = [
    "KEY_ENV",
    "DateTransform",
    "Pseudonymiser",
    "registry_key",
]

KEY_ENV = "FHIR_CART_REGISTRY_KEY"
MIN_KEY_BYTES = 32
"""NIST SP 800-107 asks for an HMAC key at least as long as the security strength wanted."""
_PSEUDONYM_HEX = 32


def registry_key(configured: str | None = None) -> bytes:
    """The pseudonymisation key: ``configured`` (settings' ``registry_key``), else the
    environment. ConfigError when there is none or it is too short to be safe."""
    text = configured if configured is not None else os.environ.get(KEY_ENV)
    if not text:
        raise ConfigError(
            f"no registry key: set {KEY_ENV} (or registry_key in settings) to a secret of at "
            f"least {MIN_KEY_BYTES} bytes, e.g. the output of `openssl rand -hex 32`"
        )
    key = text.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"the registry key is shorter than {MIN_KEY_BYTES} bytes")
    return key


def normalise_identifier(value: str) -> str:
    """'123 456-789' and '123456789' are the same identifier."""
    return re.sub(r"[\s\-./]", "", value).upper()


@dataclass(frozen=True)
class Pseudonymiser:
    """Keyed pseudonyms. ``repr`` never shows the key."""

    key: bytes

    def __repr__(self) -> str:
        return "Pseudonymiser(key=***)"

    def token(self, namespace: str, value: str) -> str:
        message = f"{namespace}\x1f{value}".encode()
        # the one-shot HMAC (the same bytes as hmac.new(...).hexdigest(), without the object)
        return hmac.digest(self.key, message, "sha256").hex()[:_PSEUDONYM_HEX]

    def patient(self, centre: str, study_id: str) -> str:
        """A centre's patient, as the registry sees them."""
        return "p" + self.token("patient", f"{centre}\x1f{study_id}")

    def bloom_key(self, kind: str) -> bytes:
        """The key of a name field's Bloom filters (:func:`~fhir_cart.registry.names.bloom`):
        derived from the registry key, one per field."""
        return hmac.new(self.key, f"name-bloom\x1f{kind}".encode(), hashlib.sha256).digest()

    def identifier(self, kind: str, value: str) -> str:
        """A shared identifier (compared across centres, never stored)."""
        return self.token(f"identifier:{kind}", normalise_identifier(value))

    def source_row(self, centre: str, location: str) -> str:
        """A row of a centre's file (``file, sheet S, row N``) as Provenance cites it: only
        whoever holds the key and the centre's file can tell which row it is
        (``fhir-cart registry resolve``)."""
        return "s" + self.token("source-row", f"{centre}\x1f{location}")

    def offset(self, patient: str, max_days: int) -> int:
        """A per-patient date shift in ±[1, max_days] (never 0: a date must never stay)."""
        number = int(self.token("date-shift", patient), 16)
        magnitude = 1 + number % max_days
        return magnitude if (number >> 64) % 2 else -magnitude

    def fingerprint(self) -> str:
        """Tells two keys apart (to notice a changed key) without revealing either."""
        return self.token("fingerprint", "fhir-cart-registry")[:16]


@dataclass(frozen=True)
class DateTransform:
    """How one patient's dates leave the registry."""

    mode: Literal["relative", "shift"]
    anchor: str
    anchor_date: dt.date | None = None
    offset: int = 0
    anchor_precision: Precision = "day"

    def date(self, value: dt.date | None, precision: Precision = "day") -> dt.date | None:
        """A day moved by the offset; nothing in relative mode, nor for a year or a month
        (moved by days it is no year or month any more)."""
        if value is None or self.mode == "relative" or precision != "day":
            return None
        return value + dt.timedelta(days=self.offset)

    def when(self, when: When | None) -> When | None:
        if when is None or when.date is None:
            return when
        if self.mode == "shift" and not when.is_partial:
            return when.model_copy(update={"date": self.date(when.date)})
        if when.day is not None or when.is_window:
            return when.model_copy(update={"date": None, "precision": "day"})
        return self._relative(when.date, when.precision)

    def _relative(self, date: dt.date, precision: Precision) -> When | None:
        """Days after the anchor: one day, or the window a year or month (of the date or of
        the anchor) may be; None without an anchor date."""
        if self.anchor_date is None:
            return None
        first, last = date_span(date, precision)
        low, high = date_span(self.anchor_date, self.anchor_precision)
        earliest, latest = (first - high).days, (last - low).days
        if earliest == latest:
            return When(day=earliest, anchor=self.anchor)
        return When(earliest_day=earliest, latest_day=latest, anchor=self.anchor)

    def birth(self, patient: PatientRecord) -> dict[str, object]:
        """The patient's birth date fields as they leave (a partial one is withheld)."""
        moved = self.date(patient.birth_date, patient.birth_precision)
        return {"birth_date": moved, "birth_precision": "day"}

    def iso(self, value: Scalar) -> Scalar | None:
        """A date attribute (ISO text)."""
        try:
            parsed = dt.date.fromisoformat(str(value))
        except ValueError:
            return None
        shifted = self.date(parsed)
        return None if shifted is None else shifted.isoformat()


def anchor_date(case: Case, anchor: str) -> tuple[dt.date, Precision] | None:
    """The date of the patient's first ``anchor`` event (day 0) with its precision, if it
    has one (the earliest by the first day it may be)."""
    dates = [
        (e.when.date, e.when.precision)
        for e in case.of(anchor)
        if e.when is not None and e.when.date
    ]
    return min(dates, key=lambda d: date_span(*d)) if dates else None


def transform_event(event: Event, transform: DateTransform, date_attributes: set[str]) -> Event:
    attributes = dict(event.attributes)
    for name in date_attributes & set(attributes):
        moved = transform.iso(attributes[name])
        if moved is None:
            del attributes[name]
        else:
            attributes[name] = moved
    return event.model_copy(
        update={
            "when": transform.when(event.when),
            "end": transform.when(event.end),
            "attributes": attributes,
        }
    )


def transform_patient(patient: PatientRecord, transform: DateTransform) -> PatientRecord:
    return patient.model_copy(update=transform.birth(patient))
