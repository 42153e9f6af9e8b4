"""``--help`` loads typer's help formatter without markdown-it and pygments (stand-ins for
``rich.markdown`` and ``rich.traceback`` while it loads; fhir_cart.cli.help_start), and
prints the same text as the golden files; later imports of those modules get the real
ones."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import ROOT

HELP = ROOT / "tests" / "data" / "help"

_PROGRAM = """
import sys
sys.argv[0] = "fhir-cart"
from fhir_cart.cli import main
code = main(sys.argv[1:])
loaded = [m for m in ("markdown_it", "pygments", "rich.markdown", "rich.traceback")
          if m in sys.modules]
import rich.markdown, rich.traceback
real = rich.markdown.Markdown.__module__ == "rich.markdown" and hasattr(
    rich.traceback, "install")
print("LOADED", code, loaded, real)
"""


@pytest.mark.parametrize("command", [[], ["map"], ["tables"]])
def test_help_without_markdown_and_tracebacks_is_the_golden_text(command: list[str]) -> None:
    env = {**os.environ, "COLUMNS": "100", "TERMINAL_WIDTH": "100", "NO_COLOR": "1"}
    env.pop("FORCE_COLOR", None)
    ran = subprocess.run(
        [sys.executable, "-c", _PROGRAM, *command, "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    text, _, last = ran.stdout.rpartition("LOADED ")
    assert last.strip() == "0 [] True"
    shown = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    golden = HELP / ("-".join(["fhir-cart", *command]) + ".txt")
    assert shown == golden.read_text(encoding="utf-8")
