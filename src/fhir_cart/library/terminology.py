"""Codes as data: loads ``mappings/terminology.yaml`` once and answers coding look-ups.

Mappers ask for a concept by its canonical vocabulary word (``concept("agent", "blinatumomab")``)
and get a ready FHIR CodeableConcept dict; they never contain a literal code. Reverse mappers
ask which word a CodeableConcept stands for. Unverified codes are emitted with a warning (kept
in :attr:`Terminology.unverified_used`) and refused under ``strict``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_cart.errors import TerminologyError
from fhir_cart.library.folder import shipped_folder
from fhir_cart.library.yamlfile import load_model

__all__ = [
    "AmbiguousCode",
    "Coding",
    "Terminology",
    "load_terminology",
]

log = logging.getLogger(__name__)

_STRICT = ConfigDict(extra="forbid", frozen=True)


class Coding(BaseModel):
    model_config = _STRICT

    system: str
    code: str = Field(min_length=1)
    display: str
    source: str = Field(min_length=1)
    verified: bool
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None
    countries: tuple[str, ...] = ()
    """ISO 3166 codes of the centres this coding is written for (empty: every centre not
    excluding its system, see ``TerminologyFile.country_excluded_systems``)."""
    prefix: bool = False
    """On the way back, the code also stands for every code that starts with it (ICD-10
    C91.0 for C91.00, C91.01, C91.02: a category and its children). Never written."""
    read_only: bool = False
    """Read back only, never written: a code other systems use for the word."""
    broader: bool = False
    """A code for a broader class the word is one of (a CTCAE body system's "Other,
    specify"): written beside the word's other codes, never read as the word by itself (a
    resource with only it is not this word, nor is a SQL view row)."""

    @model_validator(mode="after")
    def _broader_is_written(self) -> Coding:
        if self.broader and not self.written:
            raise ValueError(
                f"code {self.code}: broader is a written code's flag; "
                "remove prefix/read_only or broader"
            )
        return self

    @property
    def written(self) -> bool:
        return not (self.prefix or self.read_only)

    def for_country(self, country: str | None, excluded: dict[str, tuple[str, ...]]) -> bool:
        if self.countries:
            return country in self.countries
        return country is None or self.system not in excluded.get(country, ())

    def valid_on(self, day: dt.date) -> bool:
        after_start = self.valid_from is None or self.valid_from <= day
        return after_start and (self.valid_to is None or day <= self.valid_to)


class Concept(BaseModel):
    model_config = _STRICT

    text: str
    codings: tuple[Coding, ...]
    synonyms: tuple[str, ...] = ()
    """Other words for it (``CR``, ``neg``) that the mapping assistant recognises in cells;
    never read as values without a mapping's ``values`` saying so."""
    within: str | None = None
    """A broader word of the same group (b_all within all): a resource coded with both is
    the narrower one, not an ambiguity."""

    @model_validator(mode="after")
    def _read_back_by_another_code(self) -> Concept:
        """A word with a ``broader`` code needs a written code of its own beside it: else
        what is written of it could never be read back as it."""
        if any(c.broader for c in self.codings) and not any(
            c.written and not c.broader for c in self.codings
        ):
            raise ValueError(
                f"{self.text}: a broader code needs a written code of the word's own beside "
                "it (an own code), or the word is never read back"
            )
        return self


class AmbiguousCode(ValueError):
    """A CodeableConcept that fits two or more words equally well: never decided."""

    def __init__(self, group: str, words: list[str]) -> None:
        self.words = words
        super().__init__(f"ambiguous: matches {' and '.join(words)} ({group})")


_WORDS_HELD = 50_000
"""At most this many coding sets remembered by :meth:`Terminology.word` (then it starts
again): memory stays bounded whatever the input."""


def _codings_key(group: str, codings: Sequence[Mapping[str, Any]]) -> tuple[Any, ...] | None:
    """What :meth:`Terminology.word` reads of these codings: their (system, code) pairs, in
    order (None when one is not text: a malformed coding is not remembered)."""
    key: list[Any] = [group]
    for coding in codings:
        system, code = coding.get("system"), coding.get("code")
        if not (isinstance(system, str | None) and isinstance(code, str | None)):
            return None
        key.append((system, code))
    return tuple(key)


class Unit(BaseModel):
    model_config = _STRICT

    code: str
    display: str
    synonyms: tuple[str, ...] = ()
    """Spellings a table writes for it (``G/L`` for ``10*9/L``), read as this unit (a
    study's library file adds them: fhir_cart.library.units)."""


class OwnCodeSystem(BaseModel):
    model_config = _STRICT

    key: str
    name: str
    title: str
    version: str
    publisher: str
    date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    """Publication date of the artefacts of this version (YYYY-MM-DD)."""


class TerminologyFile(BaseModel):
    model_config = _STRICT

    systems: dict[str, str]
    own_code_system: OwnCodeSystem
    concepts: dict[str, dict[str, Concept]]
    units: dict[str, Unit]
    country_excluded_systems: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Country -> system keys never written for its centres (the code means something else
    there: ICD-10-CM's fifth digit in Germany, where ICD-10-GM is the diagnosis code)."""

    @model_validator(mode="after")
    def _systems_known(self) -> TerminologyFile:
        for group, words in self.concepts.items():
            for word, concept in words.items():
                if concept.within is not None and concept.within not in words:
                    raise ValueError(f"concepts.{group}.{word}.within: no word {concept.within!r}")
                for coding in concept.codings:
                    if coding.system not in self.systems:
                        raise ValueError(
                            f"concepts.{group}.{word}: unknown system key {coding.system!r}"
                        )
        if self.own_code_system.key not in self.systems:
            raise ValueError("own_code_system.key must name an entry of systems")
        return self


class Terminology:
    """Look-ups over a validated terminology file. Build with :func:`load_terminology`."""

    def __init__(
        self,
        data: TerminologyFile,
        *,
        strict: bool = False,
        as_of: dt.date | None = None,
        country: str | None = None,
    ) -> None:
        self.data = data
        self.country = country
        self.strict = strict
        self.as_of = as_of or dt.date.today()
        self.unverified_used: set[tuple[str, str, str]] = set()
        self.read_text = False
        """Whether a CodeableConcept with no coding at all may be read by its text (settings'
        ``classify_by_text``); a coded one is never read by its text."""
        self.own_system = data.systems[data.own_code_system.key]
        self._concepts: dict[tuple[str, str], dict[str, Any]] = {}
        self._unverified: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
        self._reverse: dict[str, dict[tuple[str, str], set[str]]] = {}
        self._prefixes: dict[str, list[tuple[str, str, str]]] = {}
        self._all_codings: dict[tuple[str, str], list[tuple[str, str, bool]]] = {}
        self._words: dict[tuple[Any, ...], str | AmbiguousCode | None] = {}
        """:meth:`word` by (group, the codings' (system, code) pairs): what it found (a
        word, or the words it could not decide between), for codings seen before."""
        self._build()

    def over(self, data: TerminologyFile) -> Terminology:
        """A terminology over ``data`` with this one's settings (strict, date, country, text
        reading) and the unverified codes it has emitted (shared, not copied): a study's
        words or units added."""
        out = Terminology(data, strict=self.strict, as_of=self.as_of, country=self.country)
        out.unverified_used = self.unverified_used
        out.read_text = self.read_text
        return out

    def _build(self) -> None:
        for group, words in self.data.concepts.items():
            reverse = self._reverse.setdefault(group, {})
            prefixes = self._prefixes.setdefault(group, [])
            for word, concept in words.items():
                self._concepts[(group, word)] = self._codeable(concept)
                self._unverified[(group, word)] = [
                    (group, word, c.code) for c in concept.codings if not c.verified and c.written
                ]
                mine = self._all_codings.setdefault((group, word), [])
                for coding in concept.codings:
                    system = self.data.systems[coding.system]
                    mine.append((system, coding.code, coding.prefix))
                    if coding.broader:  # never read as the word by itself
                        continue
                    reverse.setdefault((system, coding.code), set()).add(word)
                    if coding.prefix:
                        prefixes.append((system, coding.code, word))
                reverse.setdefault(("#text", _text_key(concept.text)), set()).add(word)

    def _codeable(self, concept: Concept) -> dict[str, Any]:
        codings = [
            {"system": self.data.systems[c.system], "code": c.code, "display": c.display}
            for c in concept.codings
            if c.written
            and c.valid_on(self.as_of)
            and c.for_country(self.country, self.data.country_excluded_systems)
        ]
        out: dict[str, Any] = {"text": concept.text}
        if codings:
            out["coding"] = codings
        return out

    def concept(self, group: str, word: str) -> dict[str, Any]:
        """The CodeableConcept for ``word``; a fresh shallow copy the caller may extend."""
        key = (group, word)
        try:
            found = self._concepts[key]
        except KeyError:
            raise TerminologyError(
                f"no concept {group}.{word} in mappings/terminology.yaml; add it there"
            ) from None
        unverified = self._unverified[key]
        if unverified:
            self._note_unverified(unverified)
        return dict(found)

    def coding(self, group: str, word: str) -> dict[str, Any]:
        """The first coding of a concept, for elements typed Coding rather than CodeableConcept."""
        codings = self.concept(group, word).get("coding")
        if not codings:
            raise TerminologyError(f"concept {group}.{word} has no coding valid today")
        first: dict[str, Any] = codings[0]
        return first

    def _note_unverified(self, codes: list[tuple[str, str, str]]) -> None:
        if self.strict:
            group, word, code = codes[0]
            raise TerminologyError(
                f"code {code} for {group}.{word} is unverified and --strict is on; "
                "confirm it or supply a verified code in mappings/terminology.yaml"
            )
        for item in codes:
            if item not in self.unverified_used:
                self.unverified_used.add(item)
                log.info("emitting unverified code %s for %s.%s", item[2], item[0], item[1])

    def word(self, group: str, codeable: Mapping[str, Any] | None) -> str | None:
        """Which vocabulary word of ``group`` a CodeableConcept stands for, by its codings
        only (None: no coding is known). Raises :class:`AmbiguousCode` when it fits several
        words equally well. Its text is read only when it has no coding at all and
        :attr:`read_text` is on (docs/fhir-model.md, "Classification")."""
        if not codeable:
            return None
        codings = [c for c in codeable.get("coding") or () if isinstance(c, dict)]
        if not codings:
            return self._text_word(group, codeable.get("text"))
        key = _codings_key(group, codings)
        if key is None:
            return self._coded_word(group, codings)
        if key in self._words:
            known = self._words[key]
        else:
            try:
                known = self._coded_word(group, codings)
            except AmbiguousCode as exc:
                known = exc
            if len(self._words) >= _WORDS_HELD:
                self._words.clear()
            self._words[key] = known
        if isinstance(known, AmbiguousCode):
            raise AmbiguousCode(group, known.words)
        return known

    def _coded_word(self, group: str, codings: Sequence[Mapping[str, Any]]) -> str | None:
        """:meth:`word` of a CodeableConcept with these codings (one at least)."""
        per_coding = [w for w in (self._words_of(group, c) for c in codings) if w]
        if not per_coding:
            return None  # codes none of the words holds: the text never overrides them
        every = set().union(*per_coding)
        fits = [w for w in sorted(every) if all(self._agrees(group, w, s) for s in per_coding)]
        given = {(c.get("system"), c.get("code")) for c in codings}
        # a broader word gives way to a narrower one only when a coding of the narrower
        # one says more (a lone In partial remission is partial_remission, not VGPR)
        fits = [
            w
            for w in fits
            if not any(
                w in self._broader(group, o) and self._says_more(group, o, w, given) for o in fits
            )
        ]
        if not fits:  # the codings disagree (two drugs, two diagnoses)
            raise AmbiguousCode(group, sorted(every))
        if len(fits) == 1:
            return fits[0]
        missing = {w: self._missing(group, w, given) for w in fits}
        least = min(missing.values())
        best = [w for w in fits if missing[w] == least]
        if len(best) > 1:
            raise AmbiguousCode(group, best)
        return best[0]

    def _words_of(self, group: str, coding: Mapping[str, Any]) -> set[str]:
        """Words one coding stands for: by its exact code, else by the longest code declared
        ``prefix`` that it starts with."""
        system, code = coding.get("system"), coding.get("code")
        exact = self._reverse.get(group, {}).get((system, code))  # type: ignore[arg-type]
        if exact:
            return set(exact)
        if not isinstance(code, str):
            return set()
        found: dict[str, int] = {}
        for p_system, prefix, word in self._prefixes.get(group, ()):
            if p_system == system and code.startswith(prefix):
                found[word] = max(found.get(word, 0), len(prefix))
        longest = max(found.values(), default=0)
        return {w for w, n in found.items() if n == longest}

    def _says_more(self, group: str, narrow: str, broad: str, given: set[Any]) -> bool:
        """Whether a given coding is the narrower word's and not the broader word's."""
        mine = {(s, c) for s, c, _ in self._all_codings[(group, narrow)]}
        theirs = {(s, c) for s, c, _ in self._all_codings[(group, broad)]}
        return bool((given & mine) - theirs)

    def broader_words(self, group: str, word: str) -> list[str]:
        """The words ``word`` is ``within``, the nearest first (b_all: [all])."""
        out: list[str] = []
        words = self.data.concepts.get(group, {})
        up = words[word].within if word in words else None
        while up is not None and up not in out:
            out.append(up)
            up = words[up].within if up in words else None
        return out

    def _broader(self, group: str, word: str) -> set[str]:
        out: set[str] = set()
        words = self.data.concepts.get(group, {})
        up = words[word].within if word in words else None
        while up is not None and up not in out:
            out.add(up)
            up = words[up].within
        return out

    def _agrees(self, group: str, word: str, words: set[str]) -> bool:
        """Whether a coding standing for ``words`` agrees with ``word`` (names it or a
        broader word)."""
        return word in words or bool(words & self._broader(group, word))

    def _missing(self, group: str, word: str, given: set[tuple[Any, Any]]) -> int:
        """How many of the word's codings the CodeableConcept lacks (the word it fits most
        closely has the fewest: a lone SNOMED 271299001 is ``progression``, whose only
        coding it is, not ``relapse``, which adds Relapse phase 263855007)."""
        count = 0
        for system, code, prefix in self._all_codings[(group, word)]:
            if prefix:
                present = any(s == system and str(c).startswith(code) for s, c in given)
            else:
                present = (system, code) in given
            count += not present
        return count

    def _text_word(self, group: str, text: Any) -> str | None:
        if not self.read_text or not isinstance(text, str):
            return None
        words = self._reverse.get(group, {}).get(("#text", _text_key(text)))
        if not words:
            return None
        if len(words) > 1:
            raise AmbiguousCode(group, sorted(words))
        return next(iter(words))

    def word_of_coding(self, group: str, coding: Mapping[str, Any] | None) -> str | None:
        return self.word(group, {"coding": [coding]}) if coding else None

    def unit(self, unit: str) -> dict[str, Any]:
        found = self.data.units.get(unit)
        if found is None:
            raise TerminologyError(f"unit {unit!r} is not in mappings/terminology.yaml units")
        return {"unit": found.display, "system": self.data.systems["ucum"], "code": found.code}

    def unit_word(self, quantity: Mapping[str, Any]) -> str | None:
        code = quantity.get("code")
        for word, unit in self.data.units.items():
            if unit.code == code:
                return word
        return None

    def system(self, key: str) -> str:
        return self.data.systems[key]

    def code_system_resource(self) -> dict[str, Any]:
        """The project's own code system as a FHIR R4 CodeSystem resource."""
        own = self.data.own_code_system
        seen: dict[str, dict[str, str]] = {}
        for words in self.data.concepts.values():
            for concept in words.values():
                for c in concept.codings:
                    if c.system == own.key:
                        seen.setdefault(c.code, {"code": c.code, "display": c.display})
        return {
            "resourceType": "CodeSystem",
            "id": own.name.lower(),
            "url": self.own_system,
            "version": own.version,
            "name": own.name,
            "title": own.title,
            "status": "active",
            "experimental": False,
            "publisher": own.publisher,
            "content": "complete",
            "caseSensitive": True,
            "count": len(seen),
            "concept": sorted(seen.values(), key=lambda c: c["code"]),
        }

    def unverified_report(self) -> list[dict[str, str]]:
        return [
            {"concept": f"{g}.{w}", "code": code} for g, w, code in sorted(self.unverified_used)
        ]


def _text_key(text: str) -> str:
    """Text as compared: case and runs of white space do not count."""
    return " ".join(text.casefold().split())


def load_terminology(
    path: Path | None = None,
    *,
    strict: bool = False,
    as_of: dt.date | None = None,
    country: str | None = None,
) -> Terminology:
    """Load and validate a terminology file (default ``mappings/terminology.yaml``);
    ``country``: the centre's country, which picks its diagnosis code systems."""
    data = _load_file(path or shipped_folder() / "terminology.yaml")
    return Terminology(data, strict=strict, as_of=as_of, country=country)


@cache
def _load_file(path: Path) -> TerminologyFile:
    return load_model(path, TerminologyFile, "terminology file")
