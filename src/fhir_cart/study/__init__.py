"""The spreadsheet side: study files (XLSX, CSV, a folder of CSVs, canonical JSON) read into
open :class:`~fhir_cart.records.Case` records.

Modules, each depending only on those above it:

- :mod:`~fhir_cart.study.values`: a cell as a date, number, yes/no, text, quantity and unit;
- :mod:`~fhir_cart.study.build`: When, Value and Event made from checked fields;
- :mod:`~fhir_cart.study.fields`: a row's value, attributes and times, read by the concepts;
- :mod:`~fhir_cart.study.plan`: the mapping made ready to read rows;
- :mod:`~fhir_cart.study.sources`: sheets and CSV files, headers checked against the mapping;
- :mod:`~fhir_cart.study.assemble`: rows -> patients and events, and rejects;
- :mod:`~fhir_cart.study.stream`: each patient's rows together (streaming feeds, disk sort);
- :mod:`~fhir_cart.study.read`: :func:`read_study` and :func:`stream_study`.
"""

from fhir_cart.study.read import ReadResult, StudyStream, read_study, stream_study
from fhir_cart.study.sources import UnmappedColumn
from fhir_cart.study.values import fit_unit, parse_quantity, word_key

__all__ = [
    "ReadResult",
    "StudyStream",
    "UnmappedColumn",
    "fit_unit",
    "parse_quantity",
    "read_study",
    "stream_study",
    "word_key",
]
