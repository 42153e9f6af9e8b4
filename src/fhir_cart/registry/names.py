"""Names as linkage keys, in keyed form only: a name is normalised (case, accents,
transliteration of umlauts and ß, particles and hyphens, anything but letters) and then
compared as two HMAC tokens under the registry key, of the normalised form and of its sound
(American Soundex, https://www.archives.gov/research/census/soundex), and as a keyed Bloom
filter of its letter pairs (:func:`bloom`), compared by Dice, so that a mistyped or
differently transliterated name still agrees in part. The clear name never leaves
:func:`fhir_cart.registry.linkage.linkage_record`."""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata

__all__ = [
    "bigrams",
    "bloom",
    "bloom_words",
    "dice",
    "name_words",
    "normalise_name",
    "soundex",
]

_TRANSLITERATE = str.maketrans(
    {
        "ä": "ae",
        "ö": "oe",
        "ü": "ue",
        "ß": "ss",
        "æ": "ae",
        "ø": "oe",
        "å": "aa",
        "œ": "oe",
        "ł": "l",
        "đ": "d",
    }
)
_PARTICLES = {
    "van",
    "von",
    "der",
    "den",
    "de",
    "del",
    "della",
    "di",
    "da",
    "du",
    "le",
    "la",
    "ter",
    "ten",
    "zu",
    "y",
    "el",
    "al",
    "bin",
    "ibn",
}
_CODES = {
    **dict.fromkeys("bfpv", "1"),
    **dict.fromkeys("cgjkqsxz", "2"),
    **dict.fromkeys("dt", "3"),
    "l": "4",
    **dict.fromkeys("mn", "5"),
    "r": "6",
}


def name_words(value: str) -> list[str]:
    """The words of a name, normalised (lower case, umlauts and ß transliterated, accents
    dropped) and without particles when other words remain: 'García-López' gives
    ['garcia', 'lopez'], 'van den Berg' ['berg']."""
    text = value.lower().translate(_TRANSLITERATE)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    words = [w for w in re.split(r"[^a-z]+", text) if w]
    return [w for w in words if w not in _PARTICLES] or words


def normalise_name(value: str) -> str:
    """'Müller-Lüdenscheidt', 'MUELLER LUEDENSCHEIDT' and 'von Müller' all give
    'muellerluedenscheidt' (particles dropped when other words remain)."""
    return "".join(name_words(value))


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


BLOOM_BITS = 256
"""Bits of a name's Bloom filter (four 64-bit words, so every SQL engine splink runs on
counts the bits they share with ``bit_count``)."""
BLOOM_HASHES = 8
"""Bits set per bigram: about 60 of 256 for an eight-letter name."""
_WORDS = BLOOM_BITS // 64


def bigrams(name: str) -> list[str]:
    """The letter pairs of a normalised name, padded (``_an``, ``nn``, ``na``, ``a_``)."""
    padded = f"_{name}_"
    return [padded[i : i + 2] for i in range(len(padded) - 1)] if name else []


def bloom(name: str, key: bytes) -> str:
    """A keyed Bloom filter of the name's bigrams, as clkhash encodes them with BLAKE2
    (https://clkhash.readthedocs.io, ``blakeHash``): each bigram's keyed BLAKE2b digest is
    cut into ``BLOOM_HASHES`` bytes, each a bit to set. ``key``: a per-registry, per-field
    key (:meth:`Pseudonymiser.bloom_key`). Written as four signed 64-bit words joined by
    ``.`` ('' for an empty name); Dice on two of them is about how many bigrams they share."""
    if not name:
        return ""
    words = [0] * _WORDS
    for gram in bigrams(name):
        for word, bits in enumerate(_gram_bits(gram, key)):
            words[word] |= bits
    signed = [w - (1 << 64) if w >= 1 << 63 else w for w in words]
    return ".".join(str(w) for w in signed)


@functools.lru_cache(maxsize=1 << 16)
def _gram_bits(gram: str, key: bytes) -> tuple[int, ...]:
    """The bits one bigram sets, per word (a registry's names share a few thousand bigrams:
    each is hashed once per field key)."""
    words = [0] * _WORDS
    digest = hashlib.blake2b(gram.encode(), key=key, digest_size=BLOOM_HASHES).digest()
    for byte in digest:
        words[byte // 64] |= 1 << (byte % 64)
    return tuple(words)


def bloom_words(encoded: str | None) -> list[int | None]:
    """The four words of :func:`bloom` (None each for a missing or empty encoding)."""
    if not encoded:
        return [None] * _WORDS
    return [int(w) for w in encoded.split(".")]


def dice(one: str, other: str) -> float:
    """Dice coefficient of two encodings (the SQL of the linkage model computes the same)."""
    a = [int(w) & ((1 << 64) - 1) for w in one.split(".")]
    b = [int(w) & ((1 << 64) - 1) for w in other.split(".")]
    shared = sum(bin(x & y).count("1") for x, y in zip(a, b, strict=True))
    total = sum(bin(x).count("1") for x in a) + sum(bin(y).count("1") for y in b)
    return 2 * shared / total if total else 0.0
