"""The service's outermost checks, in plain ASGI so they run before any body is read.

1. A declared ``Content-Length`` over the limit is refused (413) before anything else.
2. Every path but ``/health`` needs an API key from settings (401 without one, 403 with a
   wrong one, or with none configured: a service without keys refuses everything), checked
   on the headers, so an unauthenticated body is never read, parsed or spooled to disk.
   The pages (``/ui/...``) and the API documentation also take a page session's cookie
   instead; a page asked for without either is sent to the sign-in page. Who is asking
   (:class:`~fhir_cart.service.access.Principal`) goes to ``request.state.principal``.
3. The body is counted while it streams in: past the limit the application sees the client
   disconnect and the client gets a 413, whatever the application was doing with it.
4. An exception no handler took becomes a 500 problem document, logged by class name only;
   it never reaches the server, which would log it with its message and traceback (a
   message may quote a cell of a study file).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.requests import cookie_parser

from fhir_cart.service.access import Principal, principal_for_key
from fhir_cart.service.web.session import COOKIE, Sessions
from fhir_cart.settings import Settings

__all__ = ["MIN_KEY_LENGTH", "OPEN_PATHS", "Guard", "key_accepted", "weak_keys"]

log = logging.getLogger(__name__)
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health", "/", "/ui/login"})
"""The only paths served without an API key or a page session (``/`` only redirects to
the pages); besides them the pages' own scripts and styles (``/ui/static/``)."""
SESSION_PATHS = ("/ui/", "/docs", "/redoc", "/openapi.json")
"""Paths a page session opens, as well as a key (its cookie is never read elsewhere)."""
_MULTIPART_SLACK = 64 * 1024
"""Room for the multipart envelope and form fields around an upload's file."""


MIN_KEY_LENGTH = 32
"""Characters an API key needs at least (a random 32-character key is ~190 bits)."""


def weak_keys(settings: Settings) -> str | None:
    """Why the configured API keys cannot be used, or None: the service refuses to start
    with a key shorter than :data:`MIN_KEY_LENGTH` (a guessable key guards nothing)."""
    short = [
        n for n, k in enumerate(settings.api_keys, 1) if len(k.get_secret_value()) < MIN_KEY_LENGTH
    ]
    for user in settings.users:
        if user.api_key is not None and len(user.api_key.get_secret_value()) < MIN_KEY_LENGTH:
            return (
                f"users: the api_key of {user.name!r} is shorter than {MIN_KEY_LENGTH} "
                "characters; make one with: python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'"
            )
    if not short:
        return None
    which = ", ".join(map(str, short))
    return (
        f"api_keys: key {which} of {len(settings.api_keys)} is shorter than "
        f"{MIN_KEY_LENGTH} characters; make one with: python -c 'import secrets; "
        "print(secrets.token_urlsafe(32))'"
    )


def key_accepted(given: str | None, settings: Settings) -> bool:
    """Constant-time comparison against every configured key (``api_keys`` and users'
    keys); no keys accept nothing."""
    return principal_for_key(given, settings) is not None


def _given_key(headers: dict[bytes, bytes]) -> str | None:
    key = headers.get(b"x-api-key")
    if key:
        return key.decode("latin-1")
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def _problem(send: Send, status: int, title: str, detail: str) -> None:
    body = orjson.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str) -> None:
    headers = [(b"location", location.encode()), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


class Guard:
    def __init__(self, app: ASGIApp, settings: Settings, sessions: Sessions | None = None) -> None:
        self.app = app
        self.settings = settings
        self.sessions = sessions

    def limit(self, path: str) -> int:
        # the API's upload and the pages' (check, assistant) take files
        if path.rstrip("/") in ("/uploads", "/ui/uploads", "/ui/assistant"):
            return self.settings.max_upload_bytes + _MULTIPART_SLACK
        return self.settings.max_body_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        limit = self.limit(scope["path"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _problem(send, 413, "Content Too Large", f"request body over {limit} bytes")
            return
        path = scope["path"]
        if path not in OPEN_PATHS and not path.startswith("/ui/static/"):
            principal = await self._authorised(path, headers, send)
            if principal is None:
                return
            scope.setdefault("state", {})["principal"] = principal
        await self._run(scope, receive, send, limit)

    async def _authorised(
        self, path: str, headers: dict[bytes, bytes], send: Send
    ) -> Principal | None:
        given = _given_key(headers)
        if not self.settings.api_keys and not self.settings.users:
            await _problem(
                send,
                403,
                "Forbidden",
                "no API keys are configured: every request is refused (set api_keys)",
            )
            return None
        if given is None and self.sessions is not None and path.startswith(SESSION_PATHS):
            cookies = cookie_parser(headers.get(b"cookie", b"").decode("latin-1"))
            session = self.sessions.get(cookies.get(COOKIE))
            if session is not None:
                return session.principal
            if path.startswith("/ui/"):
                await _redirect(send, "/ui/login")
                return None
        if given is None:
            detail = "an API key is required (X-API-Key or Authorization: Bearer)"
            await _problem(send, 401, "Unauthorized", detail)
            return None
        principal = principal_for_key(given, self.settings)
        if principal is None:
            await _problem(send, 403, "Forbidden", "API key not accepted")
        return principal

    async def _run(
        self, scope: MutableMapping[str, Any], receive: Receive, send: Send, limit: int
    ) -> None:
        state = {"read": 0, "over": False, "started": False}

        async def counted() -> Message:
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > limit:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"]:
                return  # the 413 below answers instead of whatever the app says
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except Exception as exc:  # the last stop: nothing unhandled reaches the server's log
            if not state["over"]:
                log.error("unexpected error: %s", exc.__class__.__name__)
                if not state["started"]:
                    await _problem(
                        send, 500, "Internal Server Error", "the error was logged without details"
                    )
                return
        if state["over"]:
            await _problem(send, 413, "Content Too Large", f"request body over {limit} bytes")
