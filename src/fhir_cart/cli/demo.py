"""The main job end to end on this machine (README's first command).

Starts the local FHIR R4 server on 127.0.0.1, pushes the synthetic seed cohort, pushes it
again (nothing new is created), pulls it back by identifier search into study tables, and
prints the summary beside the numbers the paper reports. Exits non-zero if any disagree.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fhir_cart.application import Application, PullRequest, PullSelection
from fhir_cart.devservers import SekmetServer
from fhir_cart.errors import FatalError
from fhir_cart.library.studies import StudyDefinition
from fhir_cart.records import Case
from fhir_cart.report.tables import agrees, summary_table
from fhir_cart.writers import write_study

__all__ = ["run_demo"]

PACKAGE = Path(__file__).resolve().parents[1]  # src/fhir_cart (or the installed package)
ROOT = PACKAGE.parents[1]


def seed_paths(application: Application) -> tuple[Path, Path]:
    """The seed cohort (the checkout's, else the copy in the package) and its mapping (in
    the mappings folder settings name)."""
    study = ROOT / "fixtures" / "seed" / "seed_cohort.xlsx"
    if not study.exists():
        study = PACKAGE / "_fixtures" / "seed" / "seed_cohort.xlsx"
    return study, application.mapping_file("seed")


def _counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title, min_width=len(title) + 2)
    table.add_column("outcome")
    table.add_column("resources", justify="right")
    for name, n in sorted(counts.items()):
        table.add_row(name, str(n))
    return table


def run_demo(
    console: Console,
    *,
    keep_server: bool = False,
    work: Path | None = None,
    port: int | None = None,
    application: Application | None = None,
) -> None:
    """The demo through the application layer, on a cache of its own in ``work`` (default
    ``<data_dir>/demo``), so it never mixes with a real cohort's cache."""
    application = application or Application()
    work = work or application.data_dir / "demo"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    seed_file, seed_mapping = seed_paths(application)
    mapping = application.load_mapping(seed_mapping)
    assert mapping is not None
    study = application.read_study(seed_file, mapping)
    if study.rejects:
        raise FatalError(f"seed fixture has {len(study.rejects)} rejected rows")
    cache = application.cache(f"sqlite:///{work / 'cache.sqlite'}")
    console.print("[bold]fhir_cart demo[/bold]: synthetic seed cohort (7 patients), SQLite cache")
    try:
        with SekmetServer(port=port) as fhir:
            console.print(f"local FHIR R4 server (sekmet-fhir) at {fhir.base_url}")
            for attempt in ("first push", "second push (changes only)"):
                started = time.perf_counter()
                pushed = asyncio.run(
                    application.push(
                        study.cases, mapping=mapping, server=fhir.base_url, cache=cache
                    )
                )
                assert pushed.report is not None
                took = time.perf_counter() - started
                console.print(_counts_table(f"{attempt}: {took:.2f} s", pushed.report.counts))
            patients = pushed.ctx.identifier_system(mapping.centre, "patient")
            pulled = asyncio.run(
                application.pull(
                    PullRequest(PullSelection(kind="search", query=f"identifier={patients}|")),
                    server=fhir.base_url,
                    cache=cache,
                )
            )
            console.print(
                f"pulled {len(pulled.cases)} patients, "
                f"{sum(pulled.stats.resources.values())} resources; "
                f"{len(pulled.unmapped)} not mapped"
            )
            for fmt in ("csv", "xlsx"):
                write_study(
                    pulled.cases,
                    work / "pulled",
                    fmt,
                    application.library.concepts(),
                    other=pulled.other,
                )
            console.print(f"study tables written to {work / 'pulled'}")
            _compare(console, application, pulled.cases, application.study(mapping.study or "seed"))
            if keep_server:
                console.print("server running; Ctrl-C to stop")
                while True:
                    time.sleep(3600)
    finally:
        cache.close()


def _compare(
    console: Console, application: Application, cases: list[Case], study: StudyDefinition
) -> None:
    results = application.summary(cases, study).results
    console.print(summary_table(results, compare=True, title=study.name))
    wrong = [r.id for r in results if r.expected is not None and not agrees(r.value, r.expected)]
    if wrong:
        raise FatalError(f"pulled data disagrees with the paper on: {', '.join(wrong)}")
    console.print(
        "[green]all numbers the paper reports are reproduced from the FHIR server[/green]"
    )
