"""One object for the knowledge of one mappings folder: :class:`Library`.

The application builds it from settings (``mappings_dir``) and passes it down; nothing in
the process holds "the current folder". :meth:`Library.default` is the shipped library
(or the folder ``$FHIR_CART_MAPPINGS`` names), for library users and tests that want no
settings. A :class:`Library` reads each file once, on first use.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from fhir_cart.errors import ConfigError
from fhir_cart.library.bindings import bound_value_problems, study_word_problems
from fhir_cart.library.concepts import (
    ConceptLibrary,
    ConceptsFile,
    StudyLibraryFile,
    load_concepts,
)
from fhir_cart.library.folder import shipped_folder
from fhir_cart.library.profiles import Profiles, load_profiles
from fhir_cart.library.statuses import StatusTable, load_statuses
from fhir_cart.library.terminology import Terminology, load_terminology
from fhir_cart.library.units import unit_problems
from fhir_cart.library.words import words_data

if TYPE_CHECKING:
    from fhir_cart.library.study_mapping import StudyMapping

__all__ = ["Library", "shipped_folder"]


class Library:
    """Concepts, terminology, profiles, statuses, study definitions and centre mappings of
    one mappings folder. Build with :meth:`at` (one per folder) or :meth:`default`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._shared: ConceptLibrary | None = None
        self._profiles: Profiles | None = None
        self._statuses: StatusTable | None = None

    def __repr__(self) -> str:
        return f"Library({str(self.folder)!r})"

    @staticmethod
    def at(folder: Path) -> Library:
        """The library of ``folder`` (one object per folder, so files are read once)."""
        return _library_at(folder)

    @staticmethod
    def default() -> Library:
        """The shipped library (or the one ``$FHIR_CART_MAPPINGS`` names)."""
        return _library_at(shipped_folder())

    # -- the files --------------------------------------------------------------------

    def terminology(
        self, *, strict: bool = False, as_of: dt.date | None = None, country: str | None = None
    ) -> Terminology:
        """A fresh terminology (it records the unverified codes one run emits)."""
        path = self.folder / "terminology.yaml"
        return load_terminology(path, strict=strict, as_of=as_of, country=country)

    def concepts(
        self, extra: ConceptsFile | None = None, *, terminology: Terminology | None = None
    ) -> ConceptLibrary:
        """The concept library plus ``extra`` (a study's own concepts), with ``terminology``
        (default: a plain one; the plain library without extras is built once)."""
        if extra is None and terminology is None:
            if self._shared is None:
                self._shared = load_concepts(self.terminology(), self.folder / "concepts.yaml")
            return self._shared
        terms = terminology if terminology is not None else self.terminology()
        if extra is not None:
            data, problems = terms.data, []
            if isinstance(extra, StudyLibraryFile) and extra.value_sets:
                shared = self.concepts().data
                problems = study_word_problems(extra, shared, data, self.profiles())
                data = words_data(data, extra.value_sets, extra.system_url)
            if isinstance(extra, StudyLibraryFile) and extra.units:
                problems += unit_problems(extra.units, data)
            problems += bound_value_problems(extra.concepts, data, self.profiles())
            if problems:
                raise ConfigError("; ".join(problems))
        return load_concepts(terms, self.folder / "concepts.yaml", extra)

    def for_mapping(self, mapping: StudyMapping | None) -> ConceptLibrary:
        """The concept library a centre mapping reads and writes tables with: the shared
        one plus the mapping's own concepts."""
        extra = mapping.own_concepts() if mapping is not None else None
        return self.concepts(extra)

    def profiles(self) -> Profiles:
        if self._profiles is None:
            self._profiles = load_profiles(self.folder / "profiles.yaml")
        return self._profiles

    def statuses(self) -> StatusTable:
        if self._statuses is None:
            self._statuses = load_statuses(self.folder / "statuses.yaml")
        return self._statuses

    # -- named files --------------------------------------------------------------------

    @property
    def centres(self) -> Path:
        return self.folder / "centres"

    def centre(self, name: str) -> Path:
        """A centre mapping by name: ``<folder>/centres/<name>.yaml``."""
        return self.centres / f"{name}.yaml"

    def study_path(self, name_or_path: str | Path) -> Path:
        """A study name (``<folder>/studies/<name>.yaml``) or a path to a study file."""
        if isinstance(name_or_path, Path) or names_a_file(name_or_path):
            return Path(name_or_path)
        return self.folder / "studies" / f"{name_or_path}.yaml"


def names_a_file(study: str) -> bool:
    """Whether a study reference is a path (``.yaml``/``.yml``, or with a ``/``), not a name
    in ``mappings/studies``."""
    return study.endswith((".yaml", ".yml")) or "/" in study


@cache
def _library_at(folder: Path) -> Library:
    return Library(folder)
