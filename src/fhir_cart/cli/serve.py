"""``fhir-cart demo``, ``serve``, ``worker``, ``openapi`` and ``fhir-server start|stop``: the
commands that run something (the demo, the web service, a job worker, a local FHIR server)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from fhir_cart.cli.common import Group, application, err, out
from fhir_cart.errors import FatalError

__all__ = [
    "demo_command",
    "fhir_server_app",
    "openapi_command",
    "serve_command",
    "worker_command",
]


def demo_command(
    keep_server: Annotated[
        bool, typer.Option(help="Leave the local FHIR server running (Ctrl-C to stop).")
    ] = False,
    port: Annotated[
        int | None,
        typer.Option("--port", help="Port for the local FHIR server (default: any free)."),
    ] = None,
) -> None:
    """The main job end to end: local FHIR server, push the seed cohort, pull it back, and
    print the summary beside the numbers the paper reports."""
    from fhir_cart.cli.demo import run_demo

    run_demo(out, keep_server=keep_server, port=port, application=application())


def serve_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8765,
    workers: Annotated[
        bool, typer.Option(help="Run background jobs in this process (--no-workers: only API).")
    ] = True,
) -> None:
    """Run the web service (API keys, data dir and servers come from settings)."""
    import uvicorn

    from fhir_cart.service.app import create_app

    app = application()
    if not app.settings.api_keys:
        raise FatalError("set at least one API key (FHIR_CART_API_KEYS='[\"...\"]')", exit_code=2)
    os.umask(0o077)  # what the service writes (cache, uploads, job outputs) is its own only
    uvicorn.run(
        create_app(application=app, run_workers=workers), host=host, port=port, access_log=False
    )


fhir_server_app = typer.Typer(
    cls=Group,
    help="Start or stop a local FHIR R4 server on 127.0.0.1 to try fhir_cart against.",
    no_args_is_help=True,
)
PortOpt = Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")]


def fhir_server_start(
    port: PortOpt = 8080,
    kind: Annotated[
        str, typer.Option("--kind", help="sekmet (Python) or medplum (Node 20, npm).")
    ] = "sekmet",
) -> None:
    """Start an empty FHIR R4 server at http://127.0.0.1:PORT/fhir and leave it running."""
    from fhir_cart.devservers import SERVERS
    from fhir_cart.devservers.fhir_server import port_in_use, start_detached, state_dir

    if kind not in SERVERS:
        raise FatalError(f"--kind must be one of {', '.join(sorted(SERVERS))}", exit_code=2)
    if port_in_use(port):
        raise FatalError(f"port {port} on 127.0.0.1 is already in use", exit_code=2)
    url = start_detached(SERVERS[kind](port=port), state_dir())
    out.print(
        f"FHIR R4 server ({kind}) running at {url}; "
        f"'fhir-cart fhir-server stop --port {port}' stops it"
    )


def fhir_server_stop(port: PortOpt = 8080) -> None:
    """Stop the server 'fhir-server start' left on PORT and delete its data."""
    from fhir_cart.devservers.fhir_server import state_dir, stop_detached

    # noted in the user's state folder (any working folder); before, in the data folder
    url = stop_detached(state_dir(), port) or stop_detached(application().data_dir, port)
    if url is None:
        raise FatalError(f"no FHIR server was started on port {port}", exit_code=2)
    out.print(f"stopped the FHIR server at {url}")


def worker_command() -> None:
    """Run background jobs only (several workers may share a PostgreSQL cache)."""
    import asyncio

    from fhir_cart.service.jobs import run_worker

    app = application()
    os.umask(0o077)  # what the worker writes (cache, job outputs) is its own only
    with app.opened_cache() as cache:
        where = app.describe_cache(cache)
        out.print(f"worker started: taking jobs from the cache at {where} (Ctrl-C to stop)")
        while True:  # Ctrl-C ends asyncio.run with KeyboardInterrupt, never CancelledError
            try:
                asyncio.run(run_worker(app, cache))
                return
            except asyncio.CancelledError:  # a cancellation that belongs to no job
                err.print(
                    "the worker's loop was cancelled by something outside any job; restarted",
                    highlight=False,
                )


def openapi_command(
    out_file: Annotated[Path, typer.Option("--out", "-o")] = Path("api/openapi.json"),
) -> None:
    """Write the web service's OpenAPI document (the published contract)."""
    import orjson

    from fhir_cart.service.app import create_app

    document = create_app(run_workers=False).openapi()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_bytes(
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    out.print(f"wrote {out_file}")
