"""Page sign-ins: sessions held in the service's memory (a restart signs everyone out),
a random token in an HttpOnly, SameSite=Strict cookie, and a CSRF token per session that
every form and htmx request of the pages sends back."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from fhir_cart.service.access import Principal

__all__ = ["COOKIE", "LOGIN_COOKIE", "Session", "Sessions", "same_token"]

COOKIE = "fhir_cart_session"
LOGIN_COOKIE = "fhir_cart_login"
"""Double-submit CSRF cookie of the sign-in form (there is no session yet)."""


@dataclass
class Session:
    principal: Principal
    csrf: str
    expires: float


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


class Sessions:
    """Sessions by (a hash of) their token; each lasts ``hours`` since its last use."""

    def __init__(self, hours: float) -> None:
        self.seconds = hours * 3600
        self._held: dict[str, Session] = {}
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def create(self, principal: Principal) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32), time.time() + self.seconds)
        with self._lock:
            self._sweep()
            self._held[_key(token)] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            session = self._held.get(_key(token))
            if session is None:
                return None
            if session.expires < time.time():
                del self._held[_key(token)]
                return None
            session.expires = time.time() + self.seconds
            return session

    MAX_FAILURES = 5
    FAILURE_WINDOW = 900.0

    def refused(self, client: str) -> bool:
        """Whether sign-ins from ``client`` are refused for now: after
        :attr:`MAX_FAILURES` failed attempts within :attr:`FAILURE_WINDOW` seconds."""
        now = time.time()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if now - t < self.FAILURE_WINDOW]
            self._failures[client] = recent
            return len(recent) >= self.MAX_FAILURES

    def failed(self, client: str) -> None:
        with self._lock:
            self._failures.setdefault(client, []).append(time.time())

    def drop(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._held.pop(_key(token), None)

    def _sweep(self) -> None:
        now = time.time()
        for key in [k for k, s in self._held.items() if s.expires < now]:
            del self._held[key]
