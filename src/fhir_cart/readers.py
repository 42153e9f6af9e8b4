"""Kept for code written against ``fhir_cart.readers`` (the documented entry point before the
reader was split into :mod:`fhir_cart.study`): its public names, re-exported. New code
imports from :mod:`fhir_cart.study`."""

from fhir_cart.library.study_mapping import default_library
from fhir_cart.study import (
    ReadResult,
    StudyStream,
    UnmappedColumn,
    fit_unit,
    parse_quantity,
    read_study,
    stream_study,
    word_key,
)

__all__ = [
    "ReadResult",
    "StudyStream",
    "UnmappedColumn",
    "default_library",
    "fit_unit",
    "parse_quantity",
    "read_study",
    "stream_study",
    "word_key",
]
