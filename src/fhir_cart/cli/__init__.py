"""The ``fhir-cart`` command line. ``main(argv)`` is what tests call; errors end there.

- ``root``: the command group, ``--version``, :func:`main` (errors to message and exit code);
- ``common``: command classes, consoles, shared options, how rejects and warnings show;
- ``study`` (map, summary, codesystem, artefacts), ``sync`` (push, pull, tables),
  ``serve`` (demo, serve, worker, openapi, fhir-server), ``registry`` (registry ...);
- ``demo``: the demo's steps, through the application.

Commands only parse their input, call :class:`fhir_cart.application.Application` and
present the outcome. Start-up loads only typer and rich: ``fhir-cart --version`` loads not
even those, nor does a help request answered from typer's kept rendering
(``help_cache``), and each command imports what it needs when it runs."""

from __future__ import annotations

import sys

from fhir_cart.cli.version import package_version

TYPE_CHECKING = False  # not typing's: importing typing is about 15 ms of --version's start
if TYPE_CHECKING:
    from typing import Any

    from fhir_cart.cli.root import app as app
    from fhir_cart.cli.root import main as main

__all__ = ["app", "entry", "main", "package_version"]


def __getattr__(name: str) -> Any:
    """``app`` and ``main`` load the command group on first use (``--version`` needs
    neither)."""
    if name in ("app", "main"):
        from fhir_cart.cli import root

        return getattr(root, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _run(argv: list[str]) -> int:
    from fhir_cart.cli.root import main

    return main(argv)


def entry() -> None:  # pragma: no cover - console script (tests run it as a process)
    argv = sys.argv[1:]
    if argv == ["--version"]:  # answered before typer and the commands load
        sys.stdout.write(f"fhir-cart {package_version()}\n")
        sys.exit(0)
    if argv and argv[-1] == "--help":
        from fhir_cart.cli.help_cache import answer_help, is_help_request

        if is_help_request(argv):  # typer's rendering, kept for the same conditions
            sys.exit(answer_help(argv, _run))
    sys.exit(_run(argv))
