"""The ``fhir-cart`` command group: every command registered in the order ``--help`` lists
them, the ``--version`` option, and :func:`main`, where errors end (message and exit code,
no traceback).

Every command reports rejected input with file, row, column, value and reason, and exits
non-zero unless told to continue."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from typer.core import TyperOption

from fhir_cart.cli import library, mapping, registry, serve, study, sync
from fhir_cart.cli.common import Command, Group, err
from fhir_cart.cli.version import package_version
from fhir_cart.errors import FatalError, FhirClientError, RetryableError

if TYPE_CHECKING:
    from typer._click import Command as ClickCommand  # typer's own copy of click

__all__ = ["INTERNAL_EXIT", "SERVER_EXIT", "app", "flag_values", "main"]

app = typer.Typer(
    cls=Group,
    name="fhir-cart",
    help="Move clinical case-series data between study format and FHIR R4.",
    no_args_is_help=True,
    add_completion=False,
)

_COMMANDS: tuple[tuple[str, Callable[..., None], type[Command] | None], ...] = (
    ("map", study.map_command, Command),
    ("summary", study.summary_command, Command),
    ("codesystem", study.codesystem_command, Command),
    ("artefacts", study.artefacts_command, None),  # typer's own class: its help as it was
    ("push", sync.push_command, Command),
    ("pull", sync.pull_command, Command),
    ("tables", sync.tables_command, Command),
    ("views", study.views_command, Command),
    ("demo", serve.demo_command, Command),
    ("serve", serve.serve_command, Command),
)
for _name, _function, _cls in _COMMANDS:
    app.command(_name, cls=_cls)(_function)
serve.fhir_server_app.command("start", cls=Command)(serve.fhir_server_start)
serve.fhir_server_app.command("stop", cls=Command)(serve.fhir_server_stop)
app.add_typer(serve.fhir_server_app, name="fhir-server")
app.command("worker", cls=Command)(serve.worker_command)
app.command("openapi", cls=Command)(serve.openapi_command)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"fhir-cart {package_version()}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Move clinical case-series data between study format and FHIR R4."""


app.add_typer(registry.registry_app, name="registry")
library.library_app.command("check", cls=Command)(library.check_command)
app.add_typer(library.library_app, name="library")
app.add_typer(mapping.mapping_app, name="mapping")

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


@functools.cache
def _command() -> ClickCommand:
    """The click command typer builds from ``app``, once per process: building it reads
    every command's signature (typer did it twice per :func:`main`, once here and once to
    run it: most of the CPU of a short command in a test)."""
    return typer.main.get_command(app)


def flag_values(argv: Sequence[str]) -> list[str]:
    """``--validate true`` / ``--validate false`` as ``--validate`` / nothing: flags take no
    value, but writing one is a common reflex and click would refuse the stray word. Only
    when such a word is there is the command tree looked at (it is built once per process)."""
    if not any(a.lower() in _TRUE or a.lower() in _FALSE for a in argv):
        return list(argv)
    command = _command()
    commands = getattr(command, "commands", {})
    named = next((commands[a] for a in argv if a in commands), None)  # the command's own
    flags: dict[str, bool] = {}  # flags only: `serve --workers` is one, `tables --workers 2` not
    for sub in [named] if named is not None else commands.values():
        for param in sub.params:
            if isinstance(param, TyperOption) and param.is_flag:
                flags.update(dict.fromkeys(param.opts, True))
                flags.update(dict.fromkeys(param.secondary_opts, False))
    out: list[str] = []
    for arg in argv:
        word = arg.lower()
        if out and out[-1] in flags and (word in _TRUE or word in _FALSE):
            if (word in _TRUE) != flags[out[-1]]:
                out.pop()
            continue
        out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; turn a FatalError into its message and exit code (no traceback)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = flag_values(list(argv) if argv is not None else sys.argv[1:])
    if not args or "--help" in args:
        from fhir_cart.cli.help_start import load_help_formatter

        load_help_formatter()
    try:
        result = _command()(args=args, standalone_mode=False)
    except FatalError as exc:
        err.print(f"[red]error:[/red] {escape(exc.describe())}", highlight=False)
        return exc.exit_code
    except FhirClientError as exc:
        err.print(f"[red]error:[/red] {escape(_server_problem(exc))}", highlight=False)
        return SERVER_EXIT
    except typer.Abort:
        return 130
    except Exception as exc:  # click usage errors carry their own exit code
        code = getattr(exc, "exit_code", None)
        if code is None:
            return _internal_error(exc)
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        return int(code)
    return result if isinstance(result, int) else 0


SERVER_EXIT = 6
"""The server could not be used: unreachable, refused our credentials, or answered with
something that is not FHIR (5 is kept for resources the server refused one by one)."""
INTERNAL_EXIT = 70  # EX_SOFTWARE (sysexits.h)


def _server_problem(exc: FhirClientError) -> str:
    if isinstance(exc, RetryableError) and exc.status is None:
        return f"the FHIR server could not be reached ({exc.message}); nothing more was sent"
    return f"the FHIR server cannot be used: {exc.message}"


def _internal_error(exc: Exception) -> int:
    """A bug: the class name only, since a message or traceback may quote study data.
    ``FHIR_CART_DEBUG=1`` shows the traceback to whoever runs the command."""
    if os.environ.get("FHIR_CART_DEBUG"):
        raise exc
    err.print(
        f"[red]internal error[/red] ({exc.__class__.__name__}); "
        "FHIR_CART_DEBUG=1 shows the traceback",
        highlight=False,
    )
    return INTERNAL_EXIT
