"""The screen every piece of open text passes before it may leave the registry.

Open text (a text attribute, a word of an open value set that the mappings do not know, a
centre's own source word) is published only when the registry file lists its attribute in
``pseudonymisation.keep_text``, and then only when :func:`screened` accepts it. The rule
refuses the whole value (nothing is cut out of it: a half-removed name is still a clue) when
it holds any of:

- a date: digits separated by ``.``, ``/`` or ``-`` (``14.05.2012``, ``2012-05-14``,
  ``5/14/12``), a month name or its abbreviation next to a number (``14 May 2012``,
  ``Mai 2012``), or a year 1900-2099 standing alone;
- a number that looks like an identifier: five or more digits, counting across single
  spaces, dashes, dots or slashes (``4711 0815 42``, ``A123456789``, ``12-345``);
- a name-like word: a capitalised word (``Anna``, ``Kowalski``) anywhere but at the start of
  the value. Words in capitals only (``CAR-T``, ``B-ALL``, ``MRD``) are abbreviations and
  pass; a lone capitalised first word (``Kymriah``) passes.

The screen is deliberately coarse: a value it refuses is dropped and counted in the quality
report (``withheld_text``), never shown. It cannot recognise a name written in lower case or
a rare identifier shape; keep ``keep_text`` to attributes whose values are vocabularies.
"""

from __future__ import annotations

import re

__all__ = ["refusal", "screened"]

_MONTHS = (
    "jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec|january|february|march|april|june|"
    "july|august|september|october|november|december|januar|februar|märz|maerz|mai|juni|juli|"
    "okt|oktober|dez|dezember|januari|februari|maart|mei|augustus|juin|juillet|août|aout|"
    "janv|févr|fevr|mars|avr|avril|sept|déc"
)
_NUMERIC_DATE = re.compile(r"\d{1,4}\s*[./\-]\s*\d{1,2}\s*[./\-]\s*\d{1,4}")
_WORD_DATE = re.compile(rf"(?i)(?:\d{{1,4}}\.?\s*(?:{_MONTHS})\b|\b(?:{_MONTHS})\.?\s*\d{{1,4}})")
_YEAR = re.compile(r"(?<!\d)(?:19|20)\d{2}(?!\d)")
_LONG_NUMBER = re.compile(r"\d(?:[\s\-./]?\d){4,}")
_CAPITALISED = re.compile(r"(?<=[\s,;:()/\-])[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]+")


def refusal(text: str) -> str | None:
    """Why ``text`` may not be published (``date``, ``identifier-like number``,
    ``name-like word``), or None when it may."""
    if _NUMERIC_DATE.search(text) or _WORD_DATE.search(text) or _YEAR.search(text):
        return "date"
    if _LONG_NUMBER.search(text):
        return "identifier-like number"
    if _CAPITALISED.search(text.strip()):
        return "name-like word"
    return None


def screened(text: str) -> bool:
    """Whether ``text`` passes the screen (see the module's rule)."""
    return refusal(text) is None
