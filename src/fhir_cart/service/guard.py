"""The service's outermost checks, in plain ASGI so they run before any body is read.

1. A declared ``Content-Length`` over the limit is refused (413) before anything else.
2. Every path but ``/health`` needs an API key from settings (401 without one, 403 with a
   wrong one, or with none configured: a service without keys refuses everything), checked
   on the headers, so an unauthenticated body is never read, parsed or spooled to disk.
3. The body is counted while it streams in: past the limit the application sees the client
   disconnect and the client gets a 413, whatever the application was doing with it.
4. An exception no handler took becomes a 500 problem document, logged by class name only;
   it never reaches the server, which would log it with its message and traceback (a
   message may quote a cell of a study file).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from fhir_cart.settings import Settings

__all__ = ["MIN_KEY_LENGTH", "OPEN_PATHS", "Guard", "key_accepted", "weak_keys"]

log = logging.getLogger(__name__)
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health"})
"""The only paths served without an API key."""
_MULTIPART_SLACK = 64 * 1024
"""Room for the multipart envelope and form fields around an upload's file."""


MIN_KEY_LENGTH = 32
"""Characters an API key needs at least (a random 32-character key is ~190 bits)."""


def weak_keys(settings: Settings) -> str | None:
    """Why the configured API keys cannot be used, or None: the service refuses to start
    with a key shorter than :data:`MIN_KEY_LENGTH` (a guessable key guards nothing)."""
    short = [n for n, k in enumerate(settings.api_keys, 1)
             if len(k.get_secret_value()) < MIN_KEY_LENGTH]  # fmt: skip
    if not short:
        return None
    which = ", ".join(map(str, short))
    return (f"api_keys: key {which} of {len(settings.api_keys)} is shorter than "
            f"{MIN_KEY_LENGTH} characters; make one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'")  # fmt: skip


def key_accepted(given: str | None, settings: Settings) -> bool:
    """Constant-time comparison against every configured key; no keys accept nothing."""
    if not given:
        return False
    ok = False
    for allowed in settings.api_keys:
        ok |= hmac.compare_digest(given.encode(), allowed.get_secret_value().encode())
    return ok


def _given_key(headers: dict[bytes, bytes]) -> str | None:
    key = headers.get(b"x-api-key")
    if key:
        return key.decode("latin-1")
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def _problem(send: Send, status: int, title: str, detail: str) -> None:
    body = orjson.dumps({"type": "about:blank", "title": title, "status": status,
                         "detail": detail})  # fmt: skip
    headers = [(b"content-type", b"application/problem+json"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def limit(self, path: str) -> int:
        if path.rstrip("/") == "/uploads":
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
        if scope["path"] not in OPEN_PATHS and not await self._authorised(headers, send):
            return
        await self._run(scope, receive, send, limit)

    async def _authorised(self, headers: dict[bytes, bytes], send: Send) -> bool:
        given = _given_key(headers)
        if not self.settings.api_keys:
            await _problem(send, 403, "Forbidden", "no API keys are configured: every request "
                           "is refused (set api_keys)")  # fmt: skip
            return False
        if given is None:
            detail = "an API key is required (X-API-Key or Authorization: Bearer)"
            await _problem(send, 401, "Unauthorized", detail)
            return False
        if not key_accepted(given, self.settings):
            await _problem(send, 403, "Forbidden", "API key not accepted")
            return False
        return True

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
                    await _problem(send, 500, "Internal Server Error",
                                   "the error was logged without details")  # fmt: skip
                return
        if state["over"]:
            await _problem(send, 413, "Content Too Large", f"request body over {limit} bytes")
