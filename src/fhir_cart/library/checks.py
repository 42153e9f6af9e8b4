"""The one helper every cross-check of a file against the concept library builds on (the
centre mapping's and the study definition's): problems collected with their key paths,
never the first one only, and a "did you mean" for a misspelt name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from fhir_cart.library.concepts import ConceptLibrary

__all__ = ["Checker", "did_you_mean"]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, else nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Checker:
    """Collects ``key.path: what is wrong`` problems of one file against ``lib``; a
    subclass walks the file and :meth:`run` returns every problem found."""

    def __init__(self, library: ConceptLibrary) -> None:
        self.lib = library
        self.problems: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def unknown_concept(self, where: str, key: str) -> None:
        self.add(where, f"unknown concept {key!r}{did_you_mean(key, self.lib.keys())}")

    def run(self) -> list[str]:
        raise NotImplementedError
