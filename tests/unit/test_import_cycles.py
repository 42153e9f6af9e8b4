"""No import cycle among fhir_cart's modules: each imports only what sits below it.

The graph is read from the source with ``ast``: every ``import`` of a ``fhir_cart`` module,
at module level or inside a function (a deferred import hides a cycle, it does not remove
it). ``if TYPE_CHECKING:`` imports are left out: they never run."""

from __future__ import annotations

import ast
import io
import tokenize
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "fhir_cart"
ROOT = SRC.parent
FORMATTED = ("src", "tests", "benchmarks", "scripts")


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The fhir_cart modules ``module`` imports (``from x import y`` counts ``x.y`` when that
    is a module, else ``x``)."""
    found: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join([*here, base] if base else here)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
        stack.extend(ast.iter_child_nodes(node))
    return {name for name in found if name in known and name != module}


@cache
def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """The graph (parsed once per folder and session: three tests read it)."""
    paths = {module_name(p, src): p for p in (src / PACKAGE).rglob("*.py")}
    known = set(paths)
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = _imports(tree, name, path.name == "__init__.py", known)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _edges(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    members = set(component)
    return [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]


def test_src_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50  # the walk found the package
    assert "fhir_cart.settings" in graph["fhir_cart.service.guard"]
    found = cycles(graph)
    assert not found, "import cycles in src/:\n" + "\n".join(
        "  " + "; ".join(_edges(graph, component)) for component in found
    )


def test_the_cycle_finder_finds_a_cycle_through_a_deferred_import(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from fhir_cart.sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import fhir_cart.d\n"
        "import fhir_cart.a\n"
    )
    (package / "d.py").write_text("import fhir_cart.c\n")
    graph = import_graph(tmp_path)
    assert cycles(graph) == [["fhir_cart.a", "fhir_cart.c", "fhir_cart.sub.b"]]


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_the_cli_loads_no_database_arrow_or_linkage_library_until_a_command_needs_it() -> None:
    """`fhir-cart --help` and `map` start without SQLAlchemy (the cache), pyarrow or splink
    (issue 13: importing the CLI took 0.53 s, half of it the SQL cache)."""
    import subprocess
    import sys

    heavy = ("sqlalchemy", "sqlmodel", "pyarrow", "splink", "duckdb", "fhir_cart.cache")
    code = (
        "import sys, fhir_cart.cli, fhir_cart.mapjob; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


EXEMPT_FROM_SIZE: set[str] = set()
"""Modules allowed over 700 lines: none."""


def long_modules(src: Path = SRC, exempt: set[str] = EXEMPT_FROM_SIZE) -> dict[str, int]:
    """Modules of ``src/fhir_cart`` over 700 lines, by path inside the package."""
    package = src / PACKAGE
    found = {}
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > 700 and name not in exempt:
            found[name] = lines
    return found


def test_no_module_in_src_is_over_700_lines() -> None:
    """Issue 21: every module stays split along its seams (the reader, once one 1,900-line
    module; the sync jobs; summary.py and mappers/from_fhir.py, once over 1,000 lines)."""
    assert len(list((SRC / PACKAGE).rglob("*.py"))) > 100  # the walk found the package
    assert not long_modules(), long_modules()


def test_the_size_check_finds_a_long_module(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "sub" / "long.py").write_text("x = 1\n" * 701)
    (package / "short.py").write_text("x = 1\n" * 700)
    assert long_modules(tmp_path) == {"sub/long.py": 701}
    assert long_modules(tmp_path, {"sub/long.py"}) == {}


HEAVY = (
    "pydantic",
    "yaml",
    "openpyxl",
    "httpx",
    "sqlalchemy",
    "pyarrow",
    "splink",
    "duckdb",
    "fastapi",
    "fhir_cart.application",
    "fhir_cart.settings",
    "fhir_cart.mappers",
    "fhir_cart.study",
    "fhir_cart.summary",
    "fhir_cart.library",
    "fhir_cart.report",
    "fhir_cart.cache",
    "fhir_cart.sync",
    "fhir_cart.registry",
    "fhir_cart.service",
)


def _loaded_after(statements: str, *argv: str) -> list[str]:
    """The heavy modules (or any module of a heavy package) loaded by running
    ``statements`` in a fresh interpreter with ``sys.argv[1:] == argv``."""
    import subprocess
    import sys

    code = (
        f"import sys; sys.argv = ['fhir-cart', *{list(argv)!r}]\n"
        "try:\n"
        + "".join(f"    {line}\n" for line in statements.splitlines())
        + "except SystemExit:\n    pass\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted({h for m in sys.modules for h in heavy "
        "if m == h or m.startswith(h + '.')}), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stderr.splitlines() if line.startswith("[")]


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_help_and_version_load_no_heavy_module() -> None:
    """Issue 24: `fhir-cart --help` and `--version` start in well under 0.2 s because they
    load neither the application, settings (pydantic), the study reader, the mappers, the
    cache nor any data library (measured by benchmarks/bench_startup.py); the console
    script's `--version` does not even build the command group."""
    entry = "from fhir_cart.cli import entry\nentry()"
    assert _loaded_after(entry, "--version") == ["[]"]
    assert _loaded_after(entry, "--help") == ["[]"]
    # a command's --help loads none of fhir_cart's heavy modules either; typer 0.29 itself
    # imports pydantic there, to coerce the root's --version flag before the command runs
    assert _loaded_after(entry, "registry", "--help") == ["['pydantic']"]
    # the check can fail: settings load pydantic
    assert _loaded_after("import fhir_cart.settings") == ["['fhir_cart.settings', 'pydantic']"]


def test_version_answers_before_typer_loads() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.argv = ['fhir-cart', '--version']\n"
        "from fhir_cart.cli import entry\n"
        "try:\n    entry()\nexcept SystemExit:\n    pass\n"
        "print('typer' in sys.modules, 'rich' in sys.modules, 'importlib.metadata' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[0].startswith("fhir-cart ")
    # nor the package metadata reader (about 50 ms): the version is fhir_cart.__version__,
    # which the build reads too (test_version checks the installed metadata agrees)
    assert done.stdout.strip().endswith("False False False")


def formatter_skips(root: Path = ROOT, folders: tuple[str, ...] = FORMATTED) -> list[str]:
    """Comments under ``folders`` that keep ruff format out (``fmt: skip`` / ``fmt: off``);
    comments only (tokenize), so a string that names the marker is not one. Only a file whose
    text, spaces left out, holds a marker is tokenized (a comment's text is a piece of its
    file's: no file without one can have such a comment); tokenizing every file took most of
    this test's second and a half."""
    found = []
    markers = (b"#fmt:skip", b"#fmt:off")
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            data = path.read_bytes()
            if not any(marker in data.replace(b" ", b"") for marker in markers):
                continue
            with io.BytesIO(data) as handle:
                for token in tokenize.tokenize(handle.readline):
                    text = token.string.replace(" ", "")
                    if token.type == tokenize.COMMENT and text.startswith(
                        ("#fmt:skip", "#fmt:off")
                    ):
                        found.append(f"{path.relative_to(root).as_posix()}:{token.start[0]}")
    return found


def test_the_formatter_decides_the_layout(tmp_path: Path) -> None:
    """Issue 21: no `fmt: skip` fights the formatter in src/, tests/, benchmarks/ or
    scripts/ (there were 259 in src and about 180 elsewhere)."""
    assert formatter_skips() == []
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text("x = [1,2]  # fmt: " + 'skip\ny = "# fmt: ' + 'skip"\n')
    assert formatter_skips(tmp_path, ("src",)) == ["src/m.py:1"]
