"""Who is asking, and what they may see (issue 22).

A :class:`Principal` is resolved from an API key (``X-API-Key`` / ``Authorization: Bearer``)
or from a page session. Keys in settings' ``api_keys`` are admins (as before scopes
existed); ``users`` name a role:

- ``admin``: everything;
- ``centre``: only the uploads and jobs its own centre started (and their outputs);
  no registry builds, no cache browsing;
- ``registry``: registry build jobs and their (pseudonymised) outputs; no uploads, pushes
  or pulls of a centre's data, no cache browsing.

What another scope holds answers 404, as if it did not exist (a centre cannot learn which
ids another centre used); what a role may never do answers 403.

``python -m fhir_cart.service.access`` asks for a password and prints the
``password_hash`` to put in settings.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from fhir_cart.settings import Settings

__all__ = [
    "Principal",
    "can_see_job",
    "can_see_upload",
    "check_password",
    "credential_proof",
    "hash_password",
    "owner_params",
    "principal_for_key",
    "principal_for_password",
]

Role = Literal["centre", "registry", "admin"]


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    centre: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.role}{' ' + self.centre if self.centre else ''})"


_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$<salt>$<hash>`` (base64; n=2^14, r=8, p=1)."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt$" + "$".join(base64.b64encode(x).decode() for x in (salt, digest))


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
        salt, digest = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    given = hashlib.scrypt(password.encode(), salt=salt, dklen=len(digest), **_SCRYPT)
    return hmac.compare_digest(given, digest)


def principal_for_key(given: str | None, settings: Settings) -> Principal | None:
    """The principal a key stands for (None: no such key). Every configured key is compared,
    in constant time, whichever matches."""
    if not given:
        return None
    found: Principal | None = None
    for n, allowed in enumerate(settings.api_keys, 1):
        if hmac.compare_digest(given.encode(), allowed.get_secret_value().encode()):
            found = found or Principal(f"api-key-{n}", "admin")
    for user in settings.users:
        if user.api_key is not None and hmac.compare_digest(
            given.encode(), user.api_key.get_secret_value().encode()
        ):
            found = found or Principal(user.name, user.role, user.centre)
    return found


_DUMMY_HASH = hash_password("not a password", salt=b"\0" * 16)


def principal_for_password(name: str, password: str, settings: Settings) -> Principal | None:
    """A user of settings signing in with a password (None: unknown name or wrong password;
    the same work is done either way)."""
    user = next((u for u in settings.users if u.name == name and u.password_hash), None)
    stored = user.password_hash.get_secret_value() if user and user.password_hash else _DUMMY_HASH
    ok = check_password(password, stored)
    if user is None or not ok:
        return None
    return Principal(user.name, user.role, user.centre)


def credential_proof(principal: Principal, settings: Settings) -> str | None:
    """A digest of the credential that stands for ``principal`` in ``settings`` now (None:
    no such user or key): a page session is kept with it, and ends when it changes (a new
    password or key, a user removed or given another role or centre)."""
    material: list[str] = []
    if principal.name.startswith("api-key-") and principal.role == "admin":
        n = principal.name.removeprefix("api-key-")
        if n.isdigit() and 1 <= int(n) <= len(settings.api_keys):
            material = [settings.api_keys[int(n) - 1].get_secret_value()]
    who = (principal.name, principal.role, principal.centre)
    for user in settings.users:
        if (user.name, user.role, user.centre) == who:
            secrets_ = (user.password_hash, user.api_key)
            material = [s.get_secret_value() if s is not None else "" for s in secrets_]
    if not material:
        return None
    return hashlib.sha256("\0".join(material).encode()).hexdigest()


def owner_params(principal: Principal) -> dict[str, Any]:
    """What a job or upload records of who started it (its scope)."""
    return {"owner_role": principal.role, "owner_centre": principal.centre}


def can_see_upload(principal: Principal, meta: dict[str, Any]) -> bool:
    if principal.role == "admin":
        return True
    return principal.role == "centre" and meta.get("owner_centre") == principal.centre


def can_see_job(principal: Principal, kind: str, params: dict[str, Any]) -> bool:
    """Admins see every job; a centre the jobs it started; the registry the registry
    builds (whoever started them: their outputs are pseudonymised)."""
    if principal.role == "admin":
        return True
    if principal.role == "registry":
        return kind == "registry"
    return (
        kind != "registry"
        and params.get("owner_role") == "centre"
        and params.get("owner_centre") == principal.centre
    )


def _main() -> None:  # pragma: no cover - interactive
    first = getpass.getpass("password: ")
    if len(first) < 12:
        raise SystemExit("a password needs at least 12 characters")
    if getpass.getpass("again: ") != first:
        raise SystemExit("the two passwords differ")
    print(hash_password(first))


if __name__ == "__main__":  # pragma: no cover
    _main()
