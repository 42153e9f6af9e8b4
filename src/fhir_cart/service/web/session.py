"""Page sign-ins: a random token in an HttpOnly, SameSite=Strict cookie, and a CSRF token
per session that every form and htmx request of the pages sends back.

Sessions are kept in ``<data_dir>/sessions/`` (a 0700 folder, one 0600 file per session,
named by a hash of its token: the token itself is never stored), so a restart of the
service or a second worker over the same data folder (uploads already need one) does not
sign anyone out. A session stands only while the key or password it was opened with is
still in settings (its ``proof``): changing a user's password or key, or removing the user,
ends their sessions. Refused sign-ins are counted per address in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from fhir_cart.private import private_dir, write_private
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
    proof: str = ""
    """What the credential the session was opened with is now (see :class:`Sessions`)."""


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


Proof = Callable[[Principal], str | None]
"""Principal -> a digest of the credential that now stands for it in settings (None: no
such user or key any more)."""


class Sessions:
    """Sessions by (a hash of) their token in ``folder``; each lasts ``hours`` since its last
    use (written back at most once a minute). ``proof``: see :data:`Proof` (without one,
    every session stands until it expires)."""

    REFRESH = 60.0

    def __init__(self, hours: float, folder: Path, proof: Proof | None = None) -> None:
        self.seconds = hours * 3600
        self.folder = folder
        self.proof = proof or (lambda _: "")
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _path(self, token: str) -> Path:
        return self.folder / f"{_key(token)}.json"

    def _write(self, token: str, session: Session) -> None:
        p = session.principal
        data = {
            "name": p.name,
            "role": p.role,
            "centre": p.centre,
            "csrf": session.csrf,
            "expires": session.expires,
            "proof": session.proof,
        }
        private_dir(self.folder)
        temporary = self.folder / f".{_key(token)}.{secrets.token_hex(4)}"
        write_private(temporary, orjson.dumps(data))
        temporary.replace(self._path(token))

    def create(self, principal: Principal) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        proof = self.proof(principal) or ""
        session = Session(principal, secrets.token_urlsafe(32), time.time() + self.seconds, proof)
        self._sweep()
        self._write(token, session)
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token or len(token) > 200:
            return None
        path = self._path(token)
        try:
            data = orjson.loads(path.read_bytes())
            principal = Principal(data["name"], data["role"], data["centre"])
            session = Session(principal, data["csrf"], float(data["expires"]), data["proof"])
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        now = time.time()
        proof = self.proof(principal)
        if proof is None or session.expires < now or not hmac.compare_digest(proof, session.proof):
            path.unlink(missing_ok=True)
            return None
        if session.expires - now < self.seconds - self.REFRESH:
            session.expires = now + self.seconds
            self._write(token, session)
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
        if token and len(token) <= 200:
            self._path(token).unlink(missing_ok=True)

    def _sweep(self) -> None:
        """Expired sessions' files removed (at each sign-in)."""
        now = time.time()
        for path in self.folder.glob("*.json") if self.folder.is_dir() else ():
            try:
                if float(orjson.loads(path.read_bytes())["expires"]) < now:
                    path.unlink(missing_ok=True)
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                path.unlink(missing_ok=True)
