"""Shared by the benchmarks: alternating pairs, ratio statistics, machine load."""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable
from typing import Any


def load() -> list[float]:
    """1-, 5- and 15-minute load averages (the machine is shared: judge noise by them)."""
    return [round(x, 2) for x in os.getloadavg()]


def timed(run: Callable[[], int]) -> tuple[int, float]:
    """(what ``run`` returns: items done, seconds), after a full collection."""
    gc.collect()
    started = time.perf_counter()
    done = run()
    return done, time.perf_counter() - started


def spread(values: list[float], digits: int = 3) -> dict[str, float]:
    return {
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
    }


def one_pair(
    index: int,
    ours: Callable[[], int],
    theirs: Callable[[], int],
    *,
    before: Callable[[], None] | None = None,
    label: str = "",
) -> dict[str, Any]:
    """Pair number ``index`` (from 0): ``ours`` first in even pairs, ``theirs`` in odd ones.

    Each callable returns how many items it handled; ratio = our throughput / theirs.
    ``before`` runs (untimed) before each of the two runs, e.g. to clear an output folder."""
    order = [("ours", ours), ("theirs", theirs)]
    if index % 2:
        order.reverse()
    got: dict[str, tuple[int, float]] = {}
    for name, run in order:
        if before is not None:
            before()
        got[name] = timed(run)
    (n_ours, t_ours), (n_theirs, t_theirs) = got["ours"], got["theirs"]
    row = {
        "first": order[0][0],
        "ours_s": round(t_ours, 3),
        "theirs_s": round(t_theirs, 3),
        "ours_per_s": round(n_ours / t_ours),
        "theirs_per_s": round(n_theirs / t_theirs),
        "ratio": round((n_ours / t_ours) / (n_theirs / t_theirs), 4),
    }
    print(
        f"  {label} pair {index + 1} ({row['first']} first): ours {row['ours_per_s']:,}/s, "
        f"theirs {row['theirs_per_s']:,}/s, ratio {row['ratio']}",
        flush=True,
    )
    return row


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """min-median-max of the ratios, median throughput of each side, and every pair."""
    return {
        "ratio": spread([r["ratio"] for r in rows]),
        "ours_per_s_median": round(statistics.median(r["ours_per_s"] for r in rows)),
        "theirs_per_s_median": round(statistics.median(r["theirs_per_s"] for r in rows)),
        "pairs": rows,
    }


def alternate(
    pairs: int,
    ours: Callable[[], int],
    theirs: Callable[[], int],
    *,
    before: Callable[[], None] | None = None,
    label: str = "",
) -> dict[str, Any]:
    """``pairs`` alternating pairs of ``ours`` and ``theirs`` (see :func:`one_pair`)."""
    rows = [one_pair(i, ours, theirs, before=before, label=label) for i in range(pairs)]
    return summary(rows)
