"""The mapping assistant's suggestions: for a table with no mapping, what each column and
each cell word most likely stands for, from the header, the cells and the concept library.

Pure functions over a :class:`Table` (header and rows as read) and a
:class:`~fhir_cart.library.concepts.ConceptLibrary`. Each column gets its candidates, best
first, each with a score (0-1), the library's label and codes and why it was suggested;
a column is *chosen* only when the best candidate is clearly ahead
(:data:`SURE` and :data:`MARGIN`), otherwise it is left for the person. A header is
read by the concept keys, labels and ``synonyms`` of the library, by prefixes (``blina``)
and initials (``CRS``); the cells must fit what the concept holds (words of its value set,
numbers, dates): a header that names one concept over cells that fit another is not chosen.
:mod:`fhir_cart.study.draft` writes the mapping file from the person's choices.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.library.study_mapping import normalise_word

__all__ = [
    "MARGIN",
    "NO_EVENT",
    "SURE",
    "Candidate",
    "ColumnSuggestion",
    "Table",
    "WordSuggestion",
    "cell_kind",
    "concept_of",
    "date_formats",
    "header_score",
    "retarget",
    "suggest_columns",
    "suggest_words",
    "word_options",
    "word_score",
]

SURE = 0.6
"""A column or word is chosen only with at least this score ..."""
MARGIN = 0.15
"""... and this far ahead of the next candidate."""
MAX_WORDS = 40
"""Distinct words of a column listed for a value table."""

PATIENT_FIELDS: dict[str, tuple[str, ...]] = {
    "study_id": ("id", "pid", "upn", "patient", "pat", "pt", "subject", "case", "study id"),
    "sex": ("sex", "gender", "geschlecht", "sexe", "sesso"),
    "birth_date": ("birth", "dob", "born", "geburt", "geburtsdatum", "birthdate", "naissance"),
}
"""Header words of the fixed patient fields (the layout, not clinical content)."""
SEX_WORDS: dict[str, tuple[str, ...]] = {
    "female": ("f", "w", "fem", "weiblich", "woman", "girl", "femme", "femmina", "mujer"),
    "male": ("m", "männlich", "maennlich", "man", "boy", "homme", "maschio", "hombre"),
    "other": ("d", "divers", "diverse"),
    "unknown": ("u", "unk", "unbekannt", "not known"),
}
"""Cell words of the patient field ``sex`` (the record's words: female, male, other,
unknown)."""
NO_EVENT = ("none", "no", "nein", "non", "0", "-", "n.a.", "na", "n/a", "nd", "not done", "keine")
"""Cell words that say nothing happened: suggested as ``null`` (the row makes no event)."""
YES = ("yes", "y", "ja", "j", "x", "oui", "si", "1", "true")
_STOP = frozenset(
    ["of", "the", "a", "in", "on", "at", "and", "or", "to", "for", "with", "by", "from", "at"]
)
DAY_WORDS = frozenset(["day", "days", "tag", "tage", "jour", "jours", "dia", "giorno"])
DATE_WORDS = frozenset(["date", "datum", "dt", "fecha", "data", "when"])
END_WORDS = frozenset(["end", "stop", "ende", "bis", "fin", "until"])
TIME_WORDS = (
    DAY_WORDS | DATE_WORDS | END_WORDS | frozenset(["start", "begin", "beginn", "onset", "von"])
)
_ANSWERS = frozenset(YES + NO_EVENT) - {"0", "1", "-"}
_TIMEPOINT = re.compile(r"^(d|day|tag)?\d+$")
"""Header words that say when (``start``, ``Datum``, ``d28``), not what."""
_SPLIT = re.compile(r"[^0-9a-z]+")
_CAMEL = re.compile(r"(?<=[a-z]{2})(?=[A-Z][a-z])")
_NUMBER = re.compile(r"^[<>≤≥=~]*\s*[-+]?\d+([.,]\d+)?(e[-+]?\d+)?\s*(\+|[^\d\s].{0,20})?$", re.I)
_DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%m/%d/%Y", "%d-%m-%Y", "%Y/%m/%d", "%Y-%m")


@dataclass(frozen=True)
class Table:
    """One table of the file: its name (sheet, or CSV file), header and rows as read."""

    name: str
    header: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def cells(self, index: int) -> list[Any]:
        """The column's non-blank cells, in file order."""
        found = []
        for row in self.rows:
            cell = row[index] if index < len(row) else None
            if cell is not None and str(cell).strip():
                found.append(cell)
        return found


@dataclass(frozen=True)
class Candidate:
    target: str
    """``study_id``, ``sex``, ``birth_date``, ``concept:<key>``, ``attribute:<key>`` (a
    patient attribute), or for a word its canonical word (``""``: no event)."""
    score: float
    label: str
    codes: tuple[str, ...] = ()
    why: str = ""


@dataclass(frozen=True)
class WordSuggestion:
    word: str
    count: int
    candidates: tuple[Candidate, ...]
    choice: str | None
    """The canonical word chosen (``""``: no event), None: left for the person."""


@dataclass(frozen=True)
class ColumnSuggestion:
    header: str
    kind: str
    """What the cells are: ``date``, ``number``, ``word``, ``empty``."""
    distinct: int
    candidates: tuple[Candidate, ...]
    choice: str | None
    """The chosen target, None: left for the person (unsure, or nothing fits)."""
    field: str | None = None
    """For a concept: the event field the column fills (``value``, ``when_date``,
    ``when_day``, ``grade``, ``concept``)."""
    words: tuple[WordSuggestion, ...] = ()
    examples: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


# -- reading words --------------------------------------------------------------------------


def tokens(text: str) -> list[str]:
    """Lower-case word pieces of a header or label (camelCase and punctuation split)."""
    return list(_tokens(str(text)))


@lru_cache(maxsize=65536)
def _tokens(text: str) -> tuple[str, ...]:
    spaced = _CAMEL.sub(" ", text).casefold()
    return tuple(t for t in _SPLIT.split(spaced) if t)


def _content(words: Iterable[str]) -> list[str]:
    """The words that say what (not when, nor the format: ``(ja/nein)``)."""
    return [
        w
        for w in words
        if w not in _STOP and w not in TIME_WORDS and w not in _ANSWERS and not _TIMEPOINT.match(w)
    ]


def _initials(text: str) -> str:
    return "".join(t[0] for t in _content(tokens(text)))


def _phrase(text: str) -> str:
    return " ".join(tokens(text))


def word_score(word: str, names: Sequence[str]) -> tuple[float, str]:
    """How well a header or cell ``word`` names something called ``names`` (its key,
    label, synonyms; the first is the key): 1 the whole phrase (a name or synonym), 0.8 a
    name among its words (``Death date``) or the name's initials (``CRS``), 0.75 a prefix of
    4+ letters of a word of the name (``blina``), 0.7 one word of a longer name, else up to
    0.6 for the share of content words in common."""
    return _word_score(str(word), tuple(names))


@lru_cache(maxsize=262144)
def _word_score(word: str, names: tuple[str, ...]) -> tuple[float, str]:
    phrase = _phrase(word)
    if not phrase:
        return 0.0, ""
    parts = _content(phrase.split())
    best, why = 0.0, ""
    for name in names:
        whole = _phrase(name)
        if not whole:
            continue
        if phrase == whole:
            return 1.0, f"{word!r} is {name!r}"
        if len(whole) >= 2 and re.search(rf"(^| ){re.escape(whole)}( |$)", phrase):
            score, reason = 0.8, f"{word!r} holds {name!r}"
        elif len(phrase) >= 3 and re.search(rf"(^| ){re.escape(phrase)}( |$)", whole):
            score, reason = 0.7, f"{word!r} is a word of {name!r}"
        elif (
            any(len(p) >= 2 and p == _initials(name) for p in parts)
            and len(_content(tokens(name))) >= 2
        ):
            score, reason = 0.8, f"{word!r} are the initials of {name!r}"
        elif any(
            len(p) >= 4 and t.startswith(p) and t != p
            for p in parts
            for t in _content(tokens(name))
        ):
            score, reason = 0.75, f"{word!r} begins a word of {name!r}"
        else:
            theirs = set(_content(tokens(name)))
            common = theirs & set(parts)
            score = 0.6 * len(common) / max(len(theirs), len(set(parts))) if common else 0.0
            reason = f"{word!r} shares {', '.join(sorted(common))} with {name!r}" if common else ""
        if score > best:
            best, why = score, reason
    return best, why


# -- what the cells are ---------------------------------------------------------------------


_DATE_SHAPE = re.compile(r"^\d{1,4}[-./]\d{1,2}([-./]\d{1,4})?$")
"""What a date written as text looks like: only such cells are tried with strptime."""


def _is_date(cell: Any) -> bool:
    if isinstance(cell, (dt.date, dt.datetime)):
        return True
    return _date_text(str(cell).strip())


@lru_cache(maxsize=65536)
def _date_text(text: str) -> bool:
    return bool(_DATE_SHAPE.match(text)) and bool(date_formats([text]))


def date_formats(cells: Iterable[Any]) -> list[str]:
    """The ``strptime`` formats every text cell parses with (spreadsheet dates need none)."""
    texts = list(
        dict.fromkeys(str(c).strip() for c in cells if not isinstance(c, (dt.date, dt.datetime)))
    )
    found = []
    for fmt in _DATE_FORMATS:
        try:
            for text in texts:
                dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
        found.append(fmt)
    return found if texts else ["%Y-%m-%d"]


def cell_kind(cells: Sequence[Any]) -> str:
    """``date``, ``number``, ``word`` (what most cells are; dates and numbers need 80 %),
    or ``empty``."""
    if not cells:
        return "empty"
    counts = Counter(cells)  # each distinct cell is looked at once
    dates = sum(n for c, n in counts.items() if _is_date(c))
    numbers = sum(n for c, n in counts.items() if _is_number(c))
    if dates >= 0.8 * len(cells):
        return "date"
    if numbers >= 0.8 * len(cells):
        return "number"
    return "word"


def _is_number(cell: Any) -> bool:
    if isinstance(cell, bool):
        return False
    if isinstance(cell, (int, float)):
        return True
    return _number_text(str(cell).strip())


@lru_cache(maxsize=65536)
def _number_text(text: str) -> bool:
    return bool(_NUMBER.match(text)) and not _date_text(text)


def _words_of(cells: Sequence[Any]) -> dict[str, int]:
    """Distinct non-number words of a column (normalised) with how often each is written."""
    counts: dict[str, int] = {}
    for cell, n in Counter(cells).items():
        if _is_number(cell) or _is_date(cell):
            continue
        key = _norm(cell)
        counts[key] = counts.get(key, 0) + n
    return counts


@lru_cache(maxsize=65536)
def _norm(cell: Any) -> str:
    return normalise_word(cell)


# -- value words ----------------------------------------------------------------------------


def _value_names(library: ConceptLibrary, value_set: str) -> dict[str, list[str]]:
    groups = library.terminology.data.concepts.get(value_set, {})
    return {word: [word, concept.text, *concept.synonyms] for word, concept in groups.items()}


def _candidates_for_word(word: str, names: dict[str, list[str]], no_event: bool) -> list[Candidate]:
    found = []
    for canonical, spellings in names.items():
        score, why = word_score(word, spellings)
        if score > 0:
            found.append(Candidate(canonical, score, spellings[1], why=f"{why}: {canonical}"))
    if no_event and normalise_word(word) in NO_EVENT:
        found.append(Candidate("", 0.7, "no event", why=f"{word!r} says nothing happened"))
    return sorted(found, key=lambda c: -c.score)


def _decide(candidates: Sequence[Candidate]) -> str | None:
    if not candidates or candidates[0].score < SURE:
        return None
    if len(candidates) > 1 and candidates[0].score - candidates[1].score < MARGIN:
        return None
    return candidates[0].target


def suggest_words(
    words: dict[str, int], names: dict[str, list[str]], *, no_event: bool = True
) -> tuple[WordSuggestion, ...]:
    """Each distinct word's canonical word, from the value set's words, texts and synonyms."""
    out = []
    for word, count in sorted(words.items(), key=lambda kv: -kv[1])[:MAX_WORDS]:
        candidates = tuple(_candidates_for_word(word, names, no_event)[:5])
        out.append(WordSuggestion(word, count, candidates, _decide(candidates)))
    return tuple(out)


def _fit(words: dict[str, int], names: dict[str, list[str]]) -> float:
    """The share of a column's written words that are words of the value set."""
    if not words:
        return 0.0
    total = sum(words.values())
    common = sorted(words.items(), key=lambda kv: -kv[1])[:MAX_WORDS]  # a free-text column
    good = sum(n for w, n in common if _decide(_candidates_for_word(w, names, True)))
    return good / total


# -- columns --------------------------------------------------------------------------------


def _codes(library: ConceptLibrary, key: str) -> tuple[str, ...]:
    concept = library.concept(key)
    shown = []
    for coding in concept.codings:
        if coding.written:
            flag = "" if coding.verified else " (unverified)"
            shown.append(f"{coding.system} {coding.code} {coding.display}{flag}")
    return tuple(shown) or ("no coding in the library",)


def header_score(header: str, library: ConceptLibrary, key: str) -> tuple[float, str]:
    concept = library.concept(key)
    return word_score(header, [key, concept.label, *concept.synonyms])


def _sex_names() -> dict[str, list[str]]:
    return {sex: [sex, sex, *words] for sex, words in SEX_WORDS.items()}


def _explained(header: str, library: ConceptLibrary, key: str) -> float:
    """0.5-1: how much of the header the concept explains (its own words, its attributes'
    words, time words); ``Steroid-refractory GvHD`` is not about corticosteroids alone."""
    concept = library.concept(key)
    own = {t for name in (key, concept.label, *concept.synonyms) for t in tokens(name)}
    for attr in concept.attributes:
        found = library.data.attributes.get(attr)
        own |= set(tokens(attr)) | (set(tokens(found.label)) if found else set())
    words = _content(tokens(header))
    if not words:
        return 1.0
    known = sum(1 for w in words if w in own or any(o.startswith(w) for o in own if len(w) >= 4))
    return 0.5 + 0.5 * known / len(words)


def time_field(header: str, field_: str | None) -> str | None:
    """``when_*`` becomes ``end_*`` for a header that says end (``Blina end``), and a
    number column whose header says day is a day (``Death (day)``)."""
    words = set(tokens(header))
    if field_ in ("when_date", "when_day") and words & END_WORDS:
        return field_.replace("when_", "end_")
    return field_


def _yes_no(words: dict[str, int]) -> bool:
    return bool(words) and all(w in YES or w in NO_EVENT for w in words)


def concept_field(
    library: ConceptLibrary, key: str, kind: str, words: dict[str, int], header: str = ""
) -> tuple[str | None, float]:
    """Which event field a column of ``kind`` fills for the concept, and how well its cells
    fit the concept (0-1)."""
    concept = library.concept(key)
    value = concept.value
    if kind == "date":
        return "when_date", 1.0
    if kind == "empty":
        return None, 0.0
    if kind == "word" and _yes_no(words):
        return "concept", 1.0
    if kind == "number":
        if set(tokens(header)) & DAY_WORDS or "(d)" in header.casefold():
            return "when_day", 1.0
        if "grade" in concept.attributes and {"grade", "grad", "grading"} & set(tokens(header)):
            return "grade", 1.0
        if value.type in ("quantity", "integer", "range", "quantity_or_coded"):
            return "value", 1.0
        if "grade" in concept.attributes:
            return "grade", 0.9
        if value.type == "none":
            return "when_day", 0.6
        return None, 0.2
    if value.value_set is not None:
        fit = _fit(words, _value_names(library, value.value_set))
        return "value", fit
    if value.type == "text":
        return "value", 0.7
    if value.type == "boolean":
        return "value", 1.0 if _yes_no(words) else 0.3
    return None, 0.1


def _patient_candidates(header: str, kind: str, cells: Sequence[Any], rows: int) -> list[Candidate]:
    found = []
    distinct = len({_norm(c) for c in set(cells)})
    for name, words in PATIENT_FIELDS.items():
        score, why = word_score(header, [name, *words])
        if name == "study_id":
            unique = distinct == len(cells) == rows and kind != "date"
            score = score if unique else score * 0.3
            why = why + ("" if unique else "; but its cells repeat or are missing")
        elif name == "sex":
            fit = _fit(_words_of(cells), _sex_names())
            score = max(score * (0.6 + 0.4 * fit), 0.7 * fit)
        elif name == "birth_date":
            score = score if kind == "date" else score * 0.3
        if score > 0:
            found.append(Candidate(name, score, name.replace("_", " "), why=why))
    return found


def _concept_candidates(
    header: str, kind: str, words: dict[str, int], library: ConceptLibrary
) -> list[tuple[Candidate, str | None]]:
    found = []
    for key in library.keys(None):
        head, why = header_score(header, library, key)
        field_, fit = concept_field(library, key, kind, words, header)
        field_ = time_field(header, field_)
        value_set = library.concept(key).value.value_set
        if head == 0 and not (value_set and kind == "word" and field_ == "value" and fit >= 0.8):
            continue
        head *= _explained(header, library, key)
        # the header names it and the cells fit it; cells of its own value set alone
        # are a weaker hint (0.55: never chosen by themselves)
        score = head * (0.4 + 0.6 * fit) if head else 0.55 * fit
        reason = why if head else f"the cells are words of {value_set}"
        if head and fit < 0.5:
            reason += f"; but the cells do not fit it ({fit:.0%})"
        label = library.concept(key).label
        found.append(
            (
                Candidate(f"concept:{key}", round(score, 3), label, _codes(library, key), reason),
                field_,
            )
        )
    found += _stated_value_candidates(header, kind, library)
    for key, attr in library.data.patient_attributes.items():
        head, why = word_score(header, [key, attr.label, *attr.synonyms])
        if head:
            found.append(
                (Candidate(f"attribute:{key}", round(head * 0.9, 3), attr.label, why=why), None)
            )
    return found


def _stated_value_candidates(
    header: str, kind: str, library: ConceptLibrary
) -> list[tuple[Candidate, str | None]]:
    """A date or day column whose header names a coded value (``Relapse date``): the
    concept with that value, the column giving its time (``concept:disease_status=relapse``)."""
    if kind not in ("date", "number"):
        return []
    found: list[tuple[Candidate, str | None]] = []
    for key in library.keys(None):
        concept = library.concept(key)
        if concept.value.type != "coded" or concept.value.value_set is None:
            continue
        field_, _ = concept_field(library, key, kind, {}, header)
        if field_ not in ("when_date", "when_day"):
            continue
        for word, names in _value_names(library, concept.value.value_set).items():
            score, why = word_score(header, names)
            if score >= 0.7:
                label = f"{concept.label}: {names[1]}"
                target = f"concept:{key}={word}"
                reason = f"{why} (a value of {concept.label})"
                found.append(
                    (
                        Candidate(
                            target, round(score * 0.9, 3), label, _codes(library, key), reason
                        ),
                        field_,
                    )
                )
    return found


def suggest_column(
    header: str, cells: Sequence[Any], rows: int, library: ConceptLibrary
) -> ColumnSuggestion:
    """The candidates for one column, best first, and the choice when sure."""
    kind = cell_kind(cells)
    words = _words_of(cells)
    pairs = _concept_candidates(header, kind, words, library)
    pairs += [(c, None) for c in _patient_candidates(header, kind, cells, rows)]
    pairs.sort(key=lambda p: -p[0].score)
    candidates = tuple(p[0] for p in pairs[:6])
    choice = _decide(candidates)
    field_ = next((f for c, f in pairs if c.target == choice), None) if choice else None
    if field_ == "grade":  # grade 0 is no event (CTCAE grades are 1-5)
        words = _zeros(cells)
    examples = tuple(dict.fromkeys(str(c) for c in cells[:200]))[:4]
    distinct = len({_norm(c) for c in set(cells)})
    suggestion = ColumnSuggestion(header, kind, distinct, candidates, choice, field_, (), examples)
    return with_words(suggestion, choice, field_, words, library)


def _zeros(cells: Sequence[Any]) -> dict[str, int]:
    """Grade 0 cells: no event (CTCAE grades are 1-5)."""
    n = sum(k for c, k in Counter(cells).items() if _norm(c) == "0")
    return {"0": n} if n else {}


def with_words(
    suggestion: ColumnSuggestion,
    target: str | None,
    field_: str | None,
    words: dict[str, int],
    library: ConceptLibrary,
) -> ColumnSuggestion:
    """The column's value table for ``target`` (a coded value, sex, yes/no concept)."""

    names = _word_names(target, field_, library)
    if names is None or not words:
        return replace(suggestion, words=())
    return replace(suggestion, words=suggest_words(words, names))


def concept_of(target: str) -> tuple[str, str | None]:
    """``concept:<key>`` or ``concept:<key>=<word>`` -> (key, word or None)."""
    key, _, word = target.removeprefix("concept:").partition("=")
    return key, word or None


def _word_names(
    target: str | None, field_: str | None, library: ConceptLibrary
) -> dict[str, list[str]] | None:
    if target == "sex":
        return _sex_names()
    if target is None or not target.startswith("concept:"):
        return None
    key, stated = concept_of(target)
    if stated is not None:
        return None
    concept = library.concept(key)
    if field_ == "concept":
        return {key: [key, concept.label, *YES]}
    if field_ == "value" and concept.value.value_set:
        return _value_names(library, concept.value.value_set)
    if field_ == "grade":
        return {}
    return None


def suggest_columns(table: Table, library: ConceptLibrary) -> list[ColumnSuggestion]:
    """Every column of the table with its suggestion; one column at most is taken as the
    patient id, sex and birth date (the best; the others are left for the person)."""
    found = [
        suggest_column(header, table.cells(i), len(table.rows), library)
        for i, header in enumerate(table.header)
    ]
    return _one_each(found)


def _one_each(found: list[ColumnSuggestion]) -> list[ColumnSuggestion]:

    for target in PATIENT_FIELDS:
        holders = [s for s in found if s.choice == target]
        if len(holders) > 1:
            best = max(holders, key=lambda s: s.candidates[0].score)
            note = f"another column ({best.header!r}) was taken as {target}"
            found = [
                replace(s, choice=None, notes=(*s.notes, note))
                if s in holders and s is not best
                else s
                for s in found
            ]
    return found


def retarget(
    table: Table, index: int, target: str | None, library: ConceptLibrary
) -> ColumnSuggestion:
    """The column's suggestion with ``target`` chosen by the person: the field it fills and
    its value table for that target."""
    header, cells = table.header[index], table.cells(index)
    base = suggest_column(header, cells, len(table.rows), library)
    if target is None:
        return replace(base, choice=None, field=None, words=())
    kind, words = base.kind, _words_of(cells)
    field_ = None
    if target.startswith("concept:"):
        key, _ = concept_of(target)
        field_ = time_field(header, concept_field(library, key, kind, words, header)[0])
    if field_ == "grade":
        words = _zeros(cells)
    return with_words(replace(base, choice=target, field=field_), target, field_, words, library)


def word_options(target: str | None, field_: str | None, library: ConceptLibrary) -> list[str]:
    """The canonical words a cell word of the column may stand for."""
    names = _word_names(target, field_, library)
    return list(names) if names else []
