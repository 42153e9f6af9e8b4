"""The application layer: one Settings decides the cache, the mappings folder, the
terminology's strictness and the identifier bases, the same for every front end (issue 12's
drift: each of these was once decided differently by the CLI, the service and the demo)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import fhir_cart
from fhir_cart.application import Application
from fhir_cart.bundle import map_cases
from fhir_cart.cache import open_cache
from fhir_cart.cli import main
from fhir_cart.client import FhirClient
from fhir_cart.mappers.from_fhir import cases_from_fhir
from fhir_cart.service.app import create_app
from fhir_cart.settings import Settings
from tests.support import MAPPINGS, SEED_FILE, SEED_MAPPING
from tests.unit.test_import_cycles import import_graph


@pytest.fixture
def no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings from the environment only, in an empty working folder."""
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _nowhere() -> str:
    return "http://127.0.0.1:9/fhir"  # discard port: nothing answers


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_cli_push_and_pull_use_the_data_dir_cache_as_serve_and_worker_do(
    no_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = no_config / "data"
    monkeypatch.setenv("FHIR_CART_DATA_DIR", str(data))
    retries: list[int] = []

    def no_backoff(client: FhirClient, attempt: int, hinted: float | None) -> float:
        retries.append(attempt)
        return 0.0  # the retries happen; none is waited out (they took 7.5 s of backoff)

    monkeypatch.setattr(FhirClient, "_delay", no_backoff)
    push = ["push", str(SEED_FILE), "-m", str(SEED_MAPPING), "--server", _nowhere(), "--dry-run"]
    assert main(push) == 0
    pull = ["pull", "--server", _nowhere(), "--search", "_id=x", "--out", str(no_config / "o")]
    assert main(pull) == 6  # the server cannot be reached; the run is recorded all the same
    assert retries == [1, 2, 3, 4]  # settings' max_retries, against the dead port
    assert not (no_config / "fhir-cart-data").exists()
    cache = open_cache(f"sqlite:///{data / 'cache.sqlite'}")
    try:
        assert len(cache.study_records()) == 7  # the dry run's records
        assert [r.kind for r in cache.list_runs(limit=5, offset=0)] == ["pull"]
    finally:
        cache.close()
    # serve and worker open the cache through the same application method
    application = Application(Settings())
    assert application.cache_url() == f"sqlite:///{data / 'cache.sqlite'}"
    service = create_app(run_workers=False)
    assert service.state.application.cache_url() == application.cache_url()


@pytest.fixture
def unverified_copy(unverified_mappings: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The mappings folder with an unverified code, NOT chosen by $FHIR_CART_MAPPINGS: only
    settings can choose it."""
    monkeypatch.delenv("FHIR_CART_MAPPINGS")
    return unverified_mappings


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_cli_map_reads_the_mappings_dir_settings_name(
    no_config: Path, unverified_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = no_config / "out"
    args = ["map", str(SEED_FILE), "-m", str(SEED_MAPPING), "-o", str(out)]
    assert main(args) == 0
    assert not (out / "unverified-codes.json").exists()  # the shipped library
    (no_config / "none.yaml").write_text(f"mappings_dir: {unverified_copy}\n", encoding="utf-8")
    assert main(args) == 0
    assert "C126102" in (out / "unverified-codes.json").read_text(encoding="utf-8")


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_strict_terminology_in_settings_is_strict_for_the_cli(
    no_config: Path, unverified_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FHIR_CART_MAPPINGS_DIR", str(unverified_copy))
    map_args = ["map", str(SEED_FILE), "-m", str(SEED_MAPPING), "-o", str(no_config / "out")]
    push_args = ["push", str(SEED_FILE), "-m", str(SEED_MAPPING), "-s", _nowhere(), "--dry-run"]
    assert main(map_args) == 0
    monkeypatch.setenv("FHIR_CART_STRICT_TERMINOLOGY", "true")
    assert main(map_args) == 4
    assert main(push_args) == 4


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_a_pull_keeps_a_centres_own_identifier_base(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, folder)
    own = folder / "centres" / "own.yaml"
    text = SEED_MAPPING.read_text(encoding="utf-8").replace("centre: seed\n", "centre: own\n")
    own.write_text(text + "identifier_base: https://own.example.org/ids\n", encoding="utf-8")
    application = Application(Settings(data_dir=tmp_path, mappings_dir=folder))
    mapping = application.load_mapping(own)
    cases = application.read_study(SEED_FILE, mapping).cases
    ctx = application.mapping_context(mapping)
    assert ctx.identifier_system("own", "patient") == "https://own.example.org/ids/own/patient"
    resources = [r for rs in map_cases(ctx.with_style("relative"), cases) for r in rs]
    wanted = sorted((c.patient.centre, c.patient.study_id) for c in cases)
    assert {centre for centre, _ in wanted} == {"own"}
    for pull_ctx in (application.pull_context(), application.pull_context().with_style("urn")):
        pulled = cases_from_fhir(pull_ctx, resources).cases
        assert sorted((c.patient.centre, c.patient.study_id) for c in pulled) == wanted
    # what a context of the default base alone made of them (the bug this guards against)
    lost = cases_from_fhir(application.mapping_context(), resources).cases
    assert {c.patient.centre for c in lost} == {"ehr"}


FRONT_ENDS = ("fhir_cart.cli", "fhir_cart.service")
"""The CLI (its demo and registry commands included) and the web service (its worker
included): they parse input, call the application and present the outcome."""
INTERNALS = ("fhir_cart.sync", "fhir_cart.cache", "fhir_cart.study", "fhir_cart.mapjob")
"""What the application composes for them: the sync jobs, the cache, the study reader and
the map job. Their types and the job queue's names come through fhir_cart.application."""


def _every_import(path: Path) -> set[str]:
    """The modules a file imports, anywhere in it (inside functions and under
    ``if TYPE_CHECKING:`` too): ``from x import y`` counts ``x`` and ``x.y``."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _front_end_files(src: Path) -> list[Path]:
    return [*sorted((src / "cli").rglob("*.py")), *sorted((src / "service").rglob("*.py"))]


def _internals_imported(src: Path) -> dict[str, list[str]]:
    found = {}
    for path in _front_end_files(src):
        bad = sorted(
            m
            for m in _every_import(path)
            if any(m == i or m.startswith(i + ".") for i in INTERNALS)
        )
        if bad:
            found[str(path.relative_to(src))] = bad
    return found


def test_every_front_end_goes_through_the_application_layer() -> None:
    graph = import_graph()
    for front_end in ("cli.common", "cli.demo", "cli.registry", "service.jobs", "service.deps"):
        assert "fhir_cart.application" in graph[f"fhir_cart.{front_end}"], front_end
    for module in ("service.app", "service.jobs", "application"):
        assert not any(m.startswith("fhir_cart.cli") for m in graph[f"fhir_cart.{module}"]), module
    src = Path(fhir_cart.__file__).parent
    assert len(_front_end_files(src)) > 15  # the walk found both front ends
    # front ends import nothing of the sync jobs, the cache, the study reader or the map job
    assert _internals_imported(src) == {}
    # what settings decide is decided by the application only: no front end opens a cache,
    # builds a mapping context, maps cases or runs a push or pull itself
    own_calls = re.compile(
        r"(?<!\w)(open_cache|mapping_context|pull_context|run_push|run_pull|client_for|"
        r"map_cases|map_case|transaction_bundles|run_map|open_study|stream_study)\("
    )
    for path in [*_front_end_files(src), src / "registry" / "workflow.py"]:
        found = own_calls.findall(path.read_text(encoding="utf-8"))
        assert not found, (path.name, found)


def test_the_import_rule_sees_an_internal_imported_anywhere(tmp_path: Path) -> None:
    """The rule counts deferred and TYPE_CHECKING imports, not only module-level ones."""
    for folder in ("cli", "service"):
        (tmp_path / folder).mkdir()
    (tmp_path / "cli" / "a.py").write_text("def f():\n    from fhir_cart.sync.pull import x\n")
    (tmp_path / "service" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fhir_cart import cache\n"
    )
    (tmp_path / "service" / "c.py").write_text("from fhir_cart.application import Cache\n")
    assert _internals_imported(tmp_path) == {
        "cli/a.py": ["fhir_cart.sync.pull", "fhir_cart.sync.pull.x"],
        "service/b.py": ["fhir_cart.cache"],
    }


def test_every_loader_reads_the_mappings_dir_settings_name(
    no_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Study definitions, the readers' concept library and the centre mappings by name all
    come from settings' mappings_dir, not only the mapping context."""
    folder = no_config / "mappings"
    shutil.copytree(MAPPINGS, folder)
    shutil.copy(folder / "studies" / "seed.yaml", folder / "studies" / "only-here.yaml")
    args = ["summary", str(SEED_FILE), "-m", str(SEED_MAPPING), "--study", "only-here", "--json"]
    assert main(args) == 2  # not in the shipped mappings
    monkeypatch.setenv("FHIR_CART_MAPPINGS_DIR", str(folder))
    assert main(args) == 0
    application = Application(Settings())
    assert application.mapping_file("seed") == folder / "centres" / "seed.yaml"
    assert application.library.folder == folder
