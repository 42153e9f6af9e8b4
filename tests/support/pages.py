"""The workbench's pages after their background work (issue 22): every upload is checked in
the background and every summary worked out there, so a test asks for the page until it
shows the work's end, as htmx does for a person (never a measured time: the wait only
bounds a broken check)."""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

from fhir_cart.service.access import hash_password

__all__ = ["WAIT", "checked", "hashed", "summarised", "upload_id_of"]

WAIT = 120.0
"""Seconds a page is asked for before the test gives up."""


@cache
def hashed(password: str) -> str:
    """``hash_password(password)``, worked out once per test process: a fixture's users
    share it (scrypt takes about 50 ms a hash, and the page fixtures made one for each user
    of each test). Signing in still checks the password against it with scrypt."""
    return hash_password(password)


def _until(client: Any, path: str, busy: str) -> Any:
    """``path`` asked for until its page no longer has ``busy`` in it."""
    ended = threading.Event()
    for _ in range(int(WAIT / 0.05)):
        page = client.get(path)
        if busy not in page.text:
            return page
        ended.wait(0.05)
    raise AssertionError(f"{path} still shows {busy!r}")


def checked(client: Any, upload_id: str) -> Any:
    """The upload's check page once its check has ended (the check, or its failure)."""
    return _until(client, f"/ui/uploads/{upload_id}", 'id="check-progress"')


def summarised(client: Any, upload_id: str) -> Any:
    """The upload's summary page once its summary is worked out (or has failed)."""
    return _until(client, f"/ui/uploads/{upload_id}/summary", 'id="summary-progress"')


def upload_id_of(answer: Any) -> str:
    """The upload's id from the answer to the upload form (its redirect, or the page it
    led to)."""
    location = answer.headers.get("location") or str(answer.url)
    return str(location).rstrip("/").rsplit("/", 1)[1]
