"""The probabilistic model, on splink (https://moj-analytical-services.github.io/splink/).

The comparisons are written once and run on DuckDB (embedded) or Spark. Parameters: the
built-in priors below, or estimated from the data (u by random sampling, m by expectation
maximisation on two blocking passes, each of which leaves the other fields free to learn).
Every step is seeded, and DuckDB runs on one thread while training, so the same inputs give
the same model.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from fhir_cart.registry.definition import LinkageDef
from fhir_cart.registry.links import Link, content_order
from fhir_cart.registry.names import BLOOM_BITS, bloom_words

__all__ = ["comparison_vectors", "identifier_evidence", "predict"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# m (agreement among true matches) and u (among non-matches) of each level, for when there
# is too little data to estimate them. Orders of magnitude from the corruption rates seen in
# registry data: most true pairs agree exactly; transposed day/month and one-character typos
# are a few per cent; random pairs agree on a given date about once in 3,650.
_DATE_PRIORS = (
    (0.85, 0.0003),
    (0.03, 0.0003),
    (0.05, 0.003),
    (0.03, 0.004),
    (0.02, 0.012),
    (0.02, 0.98),
)
# Birth: the same day, day and month transposed, the same month but another day (both
# days known), the same month (one knows the month only), the same year, one character of
# year-month typed wrong, else (random pairs of children share a birthday about once in
# 5,000 when born within 15 years).
_BIRTH_PRIORS = (
    (0.85, 0.0002),
    (0.02, 0.0002),
    (0.01, 0.0045),
    (0.04, 0.0005),
    (0.04, 0.06),
    (0.02, 0.05),
    (0.02, 0.8846),
)
_SEX_PRIORS = ((0.98, 0.5), (0.02, 0.5))
# A name: the same spelling (random pairs share a common one a few times in a hundred; the
# term frequencies adjust this per name when trained), the same sound, a word in common
# (first or last: a double surname written in part), most letter pairs shared (Dice of the
# Bloom filters), many shared, else.
_NAME_PRIORS = (
    (0.88, 0.03),
    (0.04, 0.02),
    (0.02, 0.005),
    (0.03, 0.005),
    (0.015, 0.02),
    (0.015, 0.92),
)
# A shared identifier that differs (both records have one): a typo or a mix-up among true
# pairs, nearly every random pair. The same identifier is no evidence here: the identifier
# link itself decides, and the model must not add to it (a twin's number in the co-twin's
# record would otherwise link the twins by probability once the identifier link is refused).
_IDENTIFIER_PRIORS = (0.02, 0.999)
DICE_LEVELS = (0.75, 0.55)
"""Dice of two names' Bloom filters for the name levels below the same sound: one letter
typed wrong or written another way in an eight-letter name gives about 0.7-0.85, two
unrelated names about 0.2 (random bits of 256 shared)."""
U_PAIRS = 5e5
"""Random pairs u is estimated from. 2e6 gave the same links on 3,000 and 30,000 generated
persons and a 1.2 GiB spike whatever the registry's size (benchmarks/results/registry.md);
at 5e5 a date's exact agreement (u about 1/3,650) is still seen about 140 times."""
EXPECTED_SHARED = 0.15
"""Share of records expected to have a match in another centre (prior of the model)."""
DUCKDB_MEMORY = "384MB"
"""DuckDB's memory limit: past it, joins and sorts spill to a folder of the registry's work
folder (:func:`_spill_folder`) instead of growing. Unlimited, DuckDB took up to 1.5 GiB at
100,000 persons on top of the records (benchmarks/results/registry.md); the scores do not
depend on it."""


def _name_columns(records: Sequence[Any], kinds: Sequence[str]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {}
    for kind in kinds:
        tokens = [getattr(r, "names", {}).get(kind) for r in records]
        columns[f"name_{kind}"] = [None if t is None else t[0] for t in tokens]
        columns[f"name_{kind}_sound"] = [None if t is None else t[1] for t in tokens]
        words = [bloom_words(None if t is None or len(t) < 3 else t[2]) for t in tokens]
        for n in range(BLOOM_BITS // 64):  # an older extract has none: no Dice level fires
            columns[f"name_{kind}_b{n}"] = [w[n] for w in words]
        for n in (1, 2):  # first and last word (none in an older extract)
            columns[f"name_{kind}_w{n}"] = [
                None if t is None or len(t) < 5 else t[2 + n] for t in tokens
            ]
    return columns


def _bloom_columns(kinds: Sequence[str]) -> set[str]:
    return {f"name_{kind}_b{n}" for kind in kinds for n in range(BLOOM_BITS // 64)}


def _dice_sql(kind: str, at_least: float) -> str:
    """Dice of the two Bloom filters of a name field at least ``at_least``, in SQL that
    DuckDB and Spark read alike (unquoted column names, ``bit_count`` on 64-bit words,
    counted as INT: DuckDB's is an 8-bit integer that overflows when summed)."""
    words = [f"name_{kind}_b{n}" for n in range(BLOOM_BITS // 64)]

    def count(side: str) -> str:
        return " + ".join(f"CAST(bit_count(CAST({w}_{side} AS BIGINT)) AS INT)" for w in words)

    shared = " + ".join(
        f"CAST(bit_count(CAST({w}_l AS BIGINT) & CAST({w}_r AS BIGINT)) AS INT)" for w in words
    )
    percent = round(at_least * 100)  # whole numbers: no decimal or float rounding to differ
    return f"(200 * ({shared}) >= {percent} * ({count('l')} + {count('r')}))"


def _word_sql(kind: str) -> str:
    """The first or last word of one name is the first or last word of the other."""
    ends = [f"name_{kind}_w1", f"name_{kind}_w2"]
    return "(" + " OR ".join(f"{a}_l = {b}_r" for a in ends for b in ends) + ")"


def _name_comparison(kind: str, priors: bool) -> Any:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    p = _NAME_PRIORS if priors else (None,) * 6
    dice = [
        _level(cll.CustomLevel(_dice_sql(kind, at), f"Dice of letter pairs >= {at}"), p[3 + n])
        for n, at in enumerate(DICE_LEVELS)
    ]
    return cl.CustomComparison(
        output_column_name=f"name_{kind}",
        comparison_levels=[
            cll.NullLevel(f"name_{kind}"),
            _level(cll.ExactMatchLevel(f"name_{kind}", term_frequency_adjustments=True), p[0]),
            _level(cll.ExactMatchLevel(f"name_{kind}_sound"), p[1]),
            _level(cll.CustomLevel(_word_sql(kind), "a word in common"), p[2]),
            *dice,
            _level(cll.ElseLevel(), p[5]),
        ],
    )


def _rows(records: Sequence[Any], names: list[str]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {
        "unique_id": [],
        "identifier": [],
        "sex": [],
        "birth_year": [],
        "birth_ym": [],
        "birth_date": [],
        "birth_date_swap": [],
    }
    for name in names:
        columns[name] = []
        columns[f"{name}_swap"] = []
    for record in records:
        columns["unique_id"].append(record.pseudonym)
        ids = record.identifiers  # compared only when the registry has one kind (below)
        columns["identifier"].append(ids[0] if len(ids) == 1 else None)
        columns["sex"].append(record.sex)
        year, month = record.birth_year, record.birth_month
        columns["birth_year"].append(None if year is None else str(year))
        columns["birth_ym"].append(None if year is None or month is None else f"{year}-{month:02}")
        born = getattr(record, "birth_date", None)
        columns["birth_date"].append(None if born is None else born.isoformat())
        columns["birth_date_swap"].append(_swapped(born))
        for name in names:
            value = record.dates.get(name)
            columns[name].append(None if value is None else value.isoformat())
            columns[f"{name}_swap"].append(_swapped(value))
    return columns


def _swapped(value: dt.date | None) -> str | None:
    """The date with day and month exchanged, when that is a date and a different one."""
    if value is None or value.day > 12 or value.day == value.month:
        return None
    return dt.date(value.year, value.day, value.month).isoformat()


def _level(level: Any, priors: tuple[float, float] | None) -> Any:
    return (
        level
        if priors is None
        else level.configure(m_probability=priors[0], u_probability=priors[1])
    )


def _date_comparison(name: str, priors: bool) -> Any:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    p = _DATE_PRIORS if priors else (None,) * 6
    # splink's own levels quote the columns for the backend's dialect (a hand-written
    # "name_l" is an identifier in DuckDB but a string literal in Spark SQL)
    swapped = cll.Or(
        cll.ColumnsReversedLevel(f"{name}_swap", name),
        cll.ColumnsReversedLevel(name, f"{name}_swap"),
    ).configure(label_for_charts="day and month transposed")
    return cl.CustomComparison(
        output_column_name=name,
        comparison_levels=[
            cll.NullLevel(name),
            _level(cll.ExactMatchLevel(name), p[0]),
            _level(swapped, p[1]),
            _level(cll.LevenshteinLevel(name, 1), p[2]),
            *(
                _level(
                    cll.AbsoluteDateDifferenceLevel(
                        name, input_is_string=True, threshold=days, metric="day"
                    ),
                    p[3 + n],
                )
                for n, days in enumerate((7, 30))
            ),
            _level(cll.ElseLevel(), p[5]),
        ],
    )


def _birth_comparison(priors: bool) -> Any:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    p = _BIRTH_PRIORS if priors else (None,) * 7
    swapped = cll.Or(
        cll.ColumnsReversedLevel("birth_date_swap", "birth_date"),
        cll.ColumnsReversedLevel("birth_date", "birth_date_swap"),
    ).configure(label_for_charts="day and month transposed")
    return cl.CustomComparison(
        output_column_name="birth_ym",
        comparison_levels=[
            cll.NullLevel("birth_ym"),
            _level(cll.ExactMatchLevel("birth_date"), p[0]),
            _level(swapped, p[1]),
            _level(cll.CustomLevel(_OTHER_DAY, "same month, another day"), p[2]),
            _level(cll.ExactMatchLevel("birth_ym"), p[3]),
            _level(cll.ExactMatchLevel("birth_year"), p[4]),
            _level(cll.LevenshteinLevel("birth_ym", 1), p[5]),
            _level(cll.ElseLevel(), p[6]),
        ],
    )


_OTHER_DAY = "(birth_date_l IS NOT NULL AND birth_date_r IS NOT NULL AND birth_ym_l = birth_ym_r)"
"""Both records know the day of birth, and it differs within the same month (a look-alike
more often than a typo); unquoted, as DuckDB and Spark read it alike."""


def _identifier_comparison(priors: bool) -> Any:
    """A shared identifier both records have: the same (no evidence: m and u fixed equal),
    or another (evidence against)."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    same = cll.ExactMatchLevel("identifier").configure(
        m_probability=0.5, u_probability=0.5, fix_m_probability=True, fix_u_probability=True
    )
    return cl.CustomComparison(
        output_column_name="identifier",
        comparison_levels=[
            cll.NullLevel("identifier"),
            same,
            _level(cll.ElseLevel(), _IDENTIFIER_PRIORS if priors else None),
        ],
    )


def _sex_comparison(priors: bool) -> Any:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    p = _SEX_PRIORS if priors else (None,) * 2
    return cl.CustomComparison(
        output_column_name="sex",
        comparison_levels=[
            cll.NullLevel("sex"),
            _level(cll.ExactMatchLevel("sex"), p[0]),
            _level(cll.ElseLevel(), p[1]),
        ],
    )


def _settings(
    linkage: LinkageDef, names: list[str], priors: bool, prior_match: float, levels: bool = False
) -> Any:
    from splink import SettingsCreator

    from fhir_cart.registry.blocking import blocking_rules

    comparisons = [_date_comparison(name, priors) for name in names]
    comparisons += [_name_comparison(kind, priors) for kind in linkage.names]
    if len(linkage.identifiers) == 1:
        comparisons.append(_identifier_comparison(priors))
    if linkage.birth:
        comparisons.insert(0, _birth_comparison(priors))
    if linkage.sex:
        comparisons.insert(1 if linkage.birth else 0, _sex_comparison(priors))
    return SettingsCreator(
        link_type="link_only",
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=blocking_rules(linkage),
        probability_two_random_records_match=prior_match,
        # splink keeps the levels (gamma) only beside the compared values; those stay in
        # memory (:func:`comparison_vectors` reads the levels alone)
        retain_matching_columns=levels,
        retain_intermediate_calculation_columns=levels,
    )


def _prior_match(sizes: list[int]) -> float:
    total = sum(sizes)
    pairs = (total * total - sum(n * n for n in sizes)) / 2
    return min(0.5, max(1e-9, EXPECTED_SHARED * total / 2 / max(pairs, 1.0)))


@contextmanager
def _spill_folder(spill: Path | None) -> Iterator[Path]:
    """A new folder for DuckDB's temporary files, inside ``spill`` (the work folder) or the
    system's temporary folder, removed afterwards."""
    if spill is not None:
        spill.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="duckdb-", dir=spill) as name:
        yield Path(name)


def _db_api(
    linkage: LinkageDef, spark: Any, spill: Path | None = None, limit: str | None = DUCKDB_MEMORY
) -> Any:
    if linkage.backend == "spark":
        from splink.backends.spark import SparkAPI

        if spark is None:
            from pyspark.sql import SparkSession
            from splink.backends.spark import similarity_jar_location

            builder = SparkSession.builder.appName("fhir-cart-registry")
            builder = builder.config("spark.jars", similarity_jar_location())
            # date differences are taken in seconds: in a zone with summer time, two dates
            # a week apart across the change would be an hour more or less than a week
            spark = builder.config("spark.sql.session.timeZone", "UTC").getOrCreate()
        # persist: no checkpoint folder to configure (set one and use "checkpoint" on a cluster)
        api = SparkAPI(spark_session=spark, break_lineage_method="persist")  # type: ignore[no-untyped-call]
        return api, spark
    import duckdb
    from splink import DuckDBAPI

    connection = duckdb.connect(":memory:")
    connection.execute("SET threads TO 1")
    if spill is not None:
        quoted = spill.as_posix().replace("'", "''")
        connection.execute(f"SET temp_directory = '{quoted}'")
        if limit is not None:  # never without a folder: DuckDB's default is the cwd
            connection.execute(f"SET memory_limit = '{limit}'")
    return DuckDBAPI(connection=connection), None


def _tables(
    columns: dict[str, list[Any]], centres: list[str], spark: Any, words: set[str]
) -> list[Any]:
    """One table per centre; ``words``: the columns of 64-bit words (Bloom filters)."""
    if spark is not None:  # rows straight to Spark: no pandas conversion on the way
        names = [n for n in columns if n != "centre"]
        schema = ", ".join(f"{n} {'bigint' if n in words else 'string'}" for n in names)
        rows = list(
            zip(columns["centre"], zip(*(columns[n] for n in names), strict=True), strict=True)
        )
        return [
            spark.createDataFrame([r for c, r in rows if c == centre], schema) for centre in centres
        ]
    # Arrow tables, which DuckDB reads in place: every value in Arrow's buffers, none as a
    # Python object (the caller drops its lists); 64-bit words as 64-bit integers (through a
    # float column they would lose their low bits), everything else as text
    import pyarrow as pa
    import pyarrow.compute as pc

    whole = pa.table(
        {n: pa.array(v, type=pa.int64() if n in words else pa.string()) for n, v in columns.items()}
    )
    return [whole.filter(pc.equal(whole["centre"], c)).drop_columns(["centre"]) for c in centres]


def _train(linker: Any, linkage: LinkageDef, names: list[str]) -> None:
    from splink import block_on

    linker.training.estimate_u_using_random_sampling(max_pairs=U_PAIRS, seed=linkage.seed)
    # Each pass learns m of the fields its blocking rule leaves free. Exact-date blocks are
    # small (a few records per day); the birth month block is large, so it comes last.
    rules = [block_on(name) for name in names[:2]]
    if len(rules) < 2 and linkage.birth:
        rules.append(block_on("birth_ym", *(["sex"] if linkage.sex else [])))
    for rule in rules:
        linker.training.estimate_parameters_using_expectation_maximisation(
            rule, fix_u_probabilities=True
        )


def _linker(
    records: Sequence[Any],
    linkage: LinkageDef,
    spark: Any,
    only: set[str] | None,
    model: dict[str, Any] | None,
    levels: bool = False,
    spill: Path | None = None,
    limit: str | None = DUCKDB_MEMORY,
) -> tuple[Any, dict[str, str]]:
    """A splink Linker over the records (trained when the definition asks), and splink's
    row ids -> pseudonyms."""
    from splink import Linker

    names = list(linkage.dates)
    # splink orders by unique_id before it samples for training (u by random sampling):
    # with pseudonyms as ids the model, and so the links, depended on the key. The ids are
    # row numbers in the order of what is compared; records that tie there are identical in
    # every compared field, so whichever a sample picks, the comparisons are the same.
    ordered = sorted(records, key=content_order)
    columns = {**_rows(ordered, names), **_name_columns(ordered, linkage.names)}
    pseudonym_of = {f"{n:09d}": r.pseudonym for n, r in enumerate(ordered)}
    columns["unique_id"] = list(pseudonym_of)
    columns["centre"] = [r.centre for r in ordered]
    if only is not None:
        columns["centre"] = [c if c in only else "~others" for c in columns["centre"]]
    centres = sorted(set(columns["centre"]))
    sizes = [columns["centre"].count(c) for c in centres]
    train = model is None and (
        linkage.train == "always"
        or (linkage.train == "auto" and len(records) >= linkage.min_records_to_train)
    )
    settings: Any = model or _settings(
        linkage, names, priors=not train, prior_match=_prior_match(sizes), levels=levels
    )
    if model is not None:  # the levels are kept only when asked for, whatever the model said
        settings = {
            **model,
            "retain_matching_columns": levels,
            "retain_intermediate_calculation_columns": levels,
        }
    db_api, spark = _db_api(linkage, spark, spill, limit)
    tables = _tables(columns, centres, spark, _bloom_columns(linkage.names))
    del columns, ordered  # the tables hold the values now
    linker = Linker(
        tables,
        settings,
        db_api,
        set_up_basic_logging=False,
        # unique per call: a Spark session keeps the views of earlier calls
        input_table_aliases=[f"centre_{uuid.uuid4().hex[:12]}_{n}" for n in range(len(centres))],
    )
    if train:
        _train(linker, linkage, names)
    if linkage.backend == "duckdb":  # scores do not depend on threads, only sampling does
        db_api._con.execute("RESET threads")
    return linker, pseudonym_of


def predict(
    records: Sequence[Any],
    linkage: LinkageDef,
    *,
    spark: Any = None,
    only: set[str] | None = None,
    model: dict[str, Any] | None = None,
    spill: Path | None = None,
) -> tuple[list[Any], dict[str, Any]]:
    """Links between records of different centres with probability >= the threshold (or
    >= ``linkage.review``, then with each comparison's level as evidence), and the model
    used (splink settings with its parameters, to score later runs alike).

    ``only``: score just the pairs that touch these centres (the others are one table, so
    splink does not compare them with each other). ``model``: a model of an earlier run.
    ``spill``: the folder DuckDB spills to past :data:`DUCKDB_MEMORY` (a folder inside it,
    removed afterwards; default: the system's temporary folder)."""
    return _limited(lambda limit: _predict(records, linkage, spark, only, model, spill, limit))


def _predict(
    records: Sequence[Any],
    linkage: LinkageDef,
    spark: Any,
    only: set[str] | None,
    model: dict[str, Any] | None,
    spill: Path | None,
    limit: str | None,
) -> tuple[list[Any], dict[str, Any]]:
    levels = linkage.review is not None
    with _spill_folder(spill) as folder:
        linker, pseudonym_of = _linker(records, linkage, spark, only, model, levels, folder, limit)
        lowest = linkage.threshold if linkage.review is None else linkage.review
        found = linker.inference.predict(threshold_match_probability=lowest)
        links = _links(found.as_pandas_dataframe(), pseudonym_of)
        found.drop_table_from_database_and_remove_from_cache()
        saved = dict(linker.misc.save_model_to_json())
        _close(linker)
    saved.update(retain_matching_columns=False, retain_intermediate_calculation_columns=False)
    return links, saved


def _limited(run: Callable[[str | None], _T]) -> _T:
    """``run`` under DuckDB's memory limit; when DuckDB runs out of memory under it (a
    registry larger than any it was measured on), ``run`` again without one, and say so."""
    try:
        return run(DUCKDB_MEMORY)
    except Exception as exc:
        if not _out_of_memory(exc):
            raise
    log.warning(
        "registry linkage: DuckDB needed more than %s; linked again without a memory limit",
        DUCKDB_MEMORY,
    )
    return run(None)


def _out_of_memory(exc: BaseException | None) -> bool:
    """Whether DuckDB's out-of-memory error is ``exc`` or what caused it (splink wraps it)."""
    import duckdb

    while exc is not None:
        if isinstance(exc, duckdb.OutOfMemoryException):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _links(frame: Any, pseudonym_of: dict[str, str]) -> list[Link]:
    gammas = [str(c) for c in frame.columns if str(c).startswith("gamma_")]
    found = []
    for row in frame[["unique_id_l", "unique_id_r", "match_probability", *gammas]].itertuples(
        index=False, name=None
    ):
        a, b = pseudonym_of[str(row[0])], pseudonym_of[str(row[1])]
        evidence = tuple((g[6:], int(v)) for g, v in zip(gammas, row[3:], strict=True))
        found.append(Link(min(a, b), max(a, b), round(float(row[2]), 6), "probabilistic", evidence))
    return sorted(found)


_FAMILY = re.compile(r"family|surname|last|birth|maiden", re.IGNORECASE)
"""Name attributes twins share (by their key: ``family_name``, ``birth_name``...)."""


def given_name_differs(evidence: Sequence[tuple[str, int]], names: Sequence[str]) -> bool:
    """Whether a given name (a name attribute twins do not share) is written in both
    records and agrees at no level (not spelling, sound, a word or letter pairs): what a
    co-twin's identifier typed into a twin's record looks like when each twin has one
    record (truth data, 100,000 persons: Büşra Çetin and her twin Zeynep, one record each,
    merged through the co-twin's number while sex and the diagnosis date spoke for it)."""
    levels = dict(evidence)
    return any(levels.get(f"name_{kind}") == 0 for kind in names if not _FAMILY.search(kind))


def identifier_evidence(
    records: Sequence[Any],
    pairs: Sequence[tuple[str, str]],
    linkage: LinkageDef,
    model: dict[str, Any],
    *,
    spark: Any = None,
    spill: Path | None = None,
) -> dict[tuple[str, str], Link]:
    """What the other fields say of pairs linked by an identifier: each pair scored by the
    model from even odds (probability 0.5 before the comparisons), with its levels."""
    if not pairs:
        return {}
    from splink import Linker, block_on

    by_name = {r.pseudonym: r for r in records}
    names = list(linkage.dates)
    sides = []
    for side in (0, 1):
        chosen = [by_name[pair[side]] for pair in pairs]
        columns = {**_rows(chosen, names), **_name_columns(chosen, linkage.names)}
        # a co-twin's number is the likeliest identifier mix-up, and twins share the birth
        # date (so its month and year) and the family name: none of them is evidence for
        # the link (truth data: checked with the month and family name, 5 of 216 twin
        # pairs at 30,000 persons were merged through the co-twin's number)
        for column in ("birth_date", "birth_date_swap", "birth_ym", "birth_year"):
            columns[column] = [None] * len(pairs)
        for kind in linkage.names:
            if _FAMILY.search(kind):
                for column in [c for c in columns if c.startswith(f"name_{kind}")]:
                    columns[column] = [None] * len(pairs)
        columns["identifier"] = [None] * len(pairs)  # the link under scrutiny
        columns["unique_id"] = [f"{n:09d}{'lr'[side]}" for n in range(len(pairs))]
        columns["pair"] = [f"{n:09d}" for n in range(len(pairs))]
        columns["centre"] = [str(side)] * len(pairs)
        sides.append(columns)
    merged = {k: sides[0][k] + sides[1][k] for k in sides[0]}
    pseudonym_of = {
        **{f"{n:09d}l": a for n, (a, _) in enumerate(pairs)},
        **{f"{n:09d}r": b for n, (_, b) in enumerate(pairs)},
    }
    settings = {
        **model,
        "blocking_rules_to_generate_predictions": [block_on("pair")],
        "probability_two_random_records_match": 0.5,
        "retain_matching_columns": True,
        "retain_intermediate_calculation_columns": True,
    }
    del sides

    def run(limit: str | None) -> list[Link]:
        with _spill_folder(spill) as folder:
            db_api, session = _db_api(linkage, spark, folder, limit)
            tables = _tables(merged, ["0", "1"], session, _bloom_columns(linkage.names))
            linker = Linker(
                tables,
                settings,
                db_api,
                set_up_basic_logging=False,
                input_table_aliases=[f"ids_{uuid.uuid4().hex[:12]}_{n}" for n in range(2)],
            )
            found = linker.inference.predict()
            links = _links(found.as_pandas_dataframe(), pseudonym_of)  # type: ignore[no-untyped-call]
            found.drop_table_from_database_and_remove_from_cache()
            _close(linker)
        return links

    return {(k.left, k.right): k for k in _limited(run)}


def _close(linker: Any) -> None:
    """Close a DuckDB linker's connection (its spilled files go with it; a Spark session is
    the caller's and stays open), and collect what splink left: its SQL syntax trees are
    reference cycles, and a build turns automatic collection off
    (:func:`fhir_cart.collector.bulk_collection`), so they would stay until the end. Only
    the youngest generation: what was made since the last collection (a full one would walk
    every record read, seconds at 100,000 persons)."""
    connection = getattr(linker._db_api, "_con", None)
    if connection is not None:
        connection.close()
    gc.collect(0)


def comparison_vectors(
    records: Sequence[Any], linkage: LinkageDef, *, spark: Any = None
) -> dict[tuple[str, str], dict[str, int]]:
    """Every candidate pair (pseudonyms, smaller first) -> the level each comparison gave
    it (splink's gamma: -1 null, then levels from the weakest, 0, up to exact): what the
    model saw, whatever the probability."""
    with _spill_folder(None) as folder:
        linker, pseudonym_of = _linker(records, linkage, spark, None, None, True, folder)
        found = linker.inference.predict()
        frame = found.as_pandas_dataframe()
        found.drop_table_from_database_and_remove_from_cache()
        _close(linker)
    gammas = [c for c in frame.columns if str(c).startswith("gamma_")]
    vectors = {}
    for row in frame.to_dict("records"):
        a, b = pseudonym_of[str(row["unique_id_l"])], pseudonym_of[str(row["unique_id_r"])]
        vectors[(min(a, b), max(a, b))] = {str(g)[6:]: int(row[g]) for g in gammas}
    return dict(sorted(vectors.items()))
