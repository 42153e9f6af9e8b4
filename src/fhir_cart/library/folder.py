"""Where the shipped library is: no setting, no state (settings name another folder through
:class:`fhir_cart.library.Library`)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["shipped_folder"]


def shipped_folder() -> Path:
    """``$FHIR_CART_MAPPINGS``, else the checkout's ``mappings/``, else the packaged copy."""
    env = os.environ.get("FHIR_CART_MAPPINGS")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[3] / "mappings"
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parents[1] / "_mappings"
