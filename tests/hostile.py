"""A scripted HTTP server on 127.0.0.1 for tests of what fhir_cart does when a FHIR server
misbehaves: HTML pages, truncated JSON, links to another origin, endless paging. Each
server records the requests it got (path, query and headers), so a test can check that a
second one, standing for a foreign host, received nothing, or no credentials."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import orjson

Answer = tuple[int, dict[str, str], bytes]
Route = Callable[["Seen"], Answer] | Answer


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]


def fhir_json(body: Any, status: int = 200, **headers: str) -> Answer:
    return status, {"Content-Type": "application/fhir+json", **headers}, orjson.dumps(body)


def bundle(resources: list[dict[str, Any]], next_url: str | None = None) -> Answer:
    page: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }
    if next_url:
        page["link"] = [{"relation": "next", "url": next_url}]
    return fhir_json(page)


def capabilities(*types: str) -> Answer:
    return fhir_json(
        {
            "resourceType": "CapabilityStatement",
            "rest": [
                {
                    "mode": "server",
                    "interaction": [{"code": "transaction"}],
                    "resource": [{"type": t, "searchParam": [{"name": "subject"}]} for t in types],
                }
            ],
        }
    )


@dataclass
class HostileServer:
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def __enter__(self) -> HostileServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                parts = urlsplit(self.path)
                seen = Seen(self.command, parts.path, parts.query, dict(self.headers.items()))
                outer.seen.append(seen)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                route = outer.routes.get(parts.path)
                status, headers, body = (
                    (404, {}, b"") if route is None else route(seen) if callable(route) else route
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # a short poll: shutdown() waits up to one poll (the default 0.5 s was most of
        # the time of the tests that use this server)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
