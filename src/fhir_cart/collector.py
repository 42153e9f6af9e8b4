"""Python's cyclic garbage collector during bulk work (mapping patient by patient).

A streaming job makes and drops millions of small dicts and lists; CPython's collector
runs a collection every 700 new container objects and a full one every so often, and a full
one walks every object alive, the program's modules and the concept library included. During
bulk work, :func:`bulk_collection` freezes what is alive when it starts (``gc.freeze``: left
out of every later scan), turns automatic collection off, and collects what the bulk work
left (cycles: an HTTP response, an exception kept with its traceback) every ``every`` steps
(:meth:`Collector.step`), so memory stays bounded. The output does not depend on it (a test
compares the bytes); ``FHIR_CART_GC=default`` leaves the collector as Python sets it (for
measuring, or to rule it out).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Collector", "bulk_collection", "collect_in_bulk"]

_EVERY = 2_000


class Collector:
    """Counts steps of bulk work; a collection every ``every`` steps while tuned."""

    def __init__(self, tuned: bool, every: int = _EVERY) -> None:
        self.tuned = tuned
        self.every = every
        self._steps = 0

    def step(self) -> None:
        if not self.tuned:
            return
        self._steps += 1
        if self._steps % self.every == 0:
            gc.collect()


_depth = 0


@contextmanager
def bulk_collection(every: int = _EVERY) -> Iterator[Collector]:
    """Freeze what is alive, collect only every ``every`` steps until the block ends (nested
    blocks: the outermost one restores the collector)."""
    global _depth
    tuned = os.environ.get("FHIR_CART_GC", "").strip().lower() != "default"
    if not tuned:
        yield Collector(False)
        return
    was_enabled = gc.isenabled()
    if _depth == 0:
        gc.freeze()
        gc.disable()
    _depth += 1
    try:
        yield Collector(True, every)
    finally:
        _depth -= 1
        if _depth == 0:
            gc.unfreeze()
            if was_enabled:
                gc.enable()


def collect_in_bulk() -> None:
    """A collection now if :func:`bulk_collection` turned automatic collection off: for bulk
    work that has no per-patient step (a pull reading a type whole, page by page, before
    its first patient), whose cycles would otherwise stay until the block ends."""
    if _depth > 0 and not gc.isenabled():
        gc.collect()
