"""Names as linkage keys, in keyed form only: a name is normalised (case, accents,
transliteration of umlauts and ß, particles and hyphens, anything but letters) and then
compared as two HMAC tokens under the registry key, of the normalised form and of its sound
(American Soundex, https://www.archives.gov/research/census/soundex). The clear name never
leaves :func:`name_tokens`."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalise_name", "soundex"]

_TRANSLITERATE = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "æ": "ae",
                                "ø": "oe", "å": "aa", "œ": "oe", "ł": "l", "đ": "d"})  # fmt: skip
_PARTICLES = {"van", "von", "der", "den", "de", "del", "della", "di", "da", "du", "le", "la",
              "ter", "ten", "zu", "y", "el", "al", "bin", "ibn"}  # fmt: skip
_CODES = {**dict.fromkeys("bfpv", "1"), **dict.fromkeys("cgjkqsxz", "2"),
          **dict.fromkeys("dt", "3"), "l": "4", **dict.fromkeys("mn", "5"), "r": "6"}  # fmt: skip


def normalise_name(value: str) -> str:
    """'Müller-Lüdenscheidt', 'MUELLER LUEDENSCHEIDT' and 'von Müller' all give
    'muellerluedenscheidt' (particles dropped when other words remain)."""
    text = value.lower().translate(_TRANSLITERATE)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    words = [w for w in re.split(r"[^a-z]+", text) if w]
    kept = [w for w in words if w not in _PARTICLES] or words
    return "".join(kept)


def soundex(name: str) -> str:
    """American Soundex of a normalised name ('' for an empty one)."""
    if not name:
        return ""
    first, digits, last = name[0], [], _CODES.get(name[0], "")
    for char in name[1:]:
        code = _CODES.get(char, "")
        if code and code != last:
            digits.append(code)
        if char not in "hw":
            last = code
    return (first + "".join(digits) + "000")[:4]
