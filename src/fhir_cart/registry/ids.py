"""Registry ids that last: a registry patient keeps its id from build to build.

The ledger (``registry-ids.json`` in the output folder) holds, for the key it was made
under, each registry id's centre records (their keyed pseudonyms) and every id ever retired
with its successors. A build gives each patient (a cluster of centre records):

- the id of the previous patient whose records it holds, when exactly one previous patient
  continues into it (records that join keep the patient's id; records that leave do not
  change it either);
- when it holds the whole of several previous patients (they were found to be one), the id
  of the one with the most records (then the smaller id); the others are retired
  (``merged``), their successor the id kept;
- a fresh id otherwise. A previous patient whose records are now in several patients is
  retired (``split``), its successors the ids of those patients; one none of whose records
  is left is retired (``gone``).

An id is never given again once used: a fresh id is ``r`` + HMAC of the patient's smallest
record pseudonym, salted with a counter until it is unused (on a first build, the counter's
first value: ids are what they were before the ledger existed). Nothing of a source value
is inside an id. The crosswalk (``reports/crosswalk.csv``) lists every retired id with its
successors and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fhir_cart.registry.pseudonyms import Pseudonymiser

__all__ = ["IdLedger", "Retired", "assign_ids"]

Reason = Literal["split", "merged", "gone"]


@dataclass(frozen=True)
class Retired:
    successors: tuple[str, ...]
    reason: Reason


@dataclass
class IdLedger:
    key: str
    """Fingerprint of the key the pseudonyms are under (a ledger of another key is void)."""
    patients: dict[str, tuple[str, ...]] = field(default_factory=dict)
    retired: dict[str, Retired] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "patients": {p: list(m) for p, m in sorted(self.patients.items())},
            "retired": {
                p: {"successors": list(r.successors), "reason": r.reason}
                for p, r in sorted(self.retired.items())
            },
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> IdLedger:
        return cls(
            str(raw["key"]),
            {str(p): tuple(str(m) for m in ms) for p, ms in raw["patients"].items()},
            {
                str(p): Retired(tuple(str(s) for s in r["successors"]), r["reason"])
                for p, r in raw["retired"].items()
            },
        )

    def used(self) -> set[str]:
        return set(self.patients) | set(self.retired)


def _continuing(
    previous: IdLedger, cluster_of: dict[str, int]
) -> tuple[dict[int, list[str]], dict[str, set[int]]]:
    """Cluster -> previous ids whose remaining records are all in it; previous id -> the
    clusters its remaining records are in (0: gone, 2 or more: split)."""
    continuing: dict[int, list[str]] = {}
    spread: dict[str, set[int]] = {}
    for pid, members in sorted(previous.patients.items()):
        targets = {cluster_of[m] for m in members if m in cluster_of}
        spread[pid] = targets
        if len(targets) == 1:
            continuing.setdefault(next(iter(targets)), []).append(pid)
    return continuing, spread


def _fresh(smallest: str, used: set[str], pseudonyms: Pseudonymiser) -> str:
    salt = 0
    while True:
        seed = smallest if salt == 0 else f"{smallest}\x1f{salt}"
        candidate = "r" + pseudonyms.token("registry", seed)
        if candidate not in used:
            return candidate
        salt += 1


def assign_ids(
    clusters: Sequence[Sequence[str]], previous: IdLedger | None, pseudonyms: Pseudonymiser
) -> tuple[list[str], IdLedger]:
    """Each cluster's registry id (in the clusters' order) and the new ledger."""
    key = pseudonyms.fingerprint()
    if previous is None or previous.key != key:
        previous = IdLedger(key)
    cluster_of = {m: n for n, members in enumerate(clusters) for m in members}
    continuing, spread = _continuing(previous, cluster_of)
    size = {p: len(m) for p, m in previous.patients.items()}
    retired = dict(previous.retired)
    used = previous.used()
    ids: list[str | None] = [None] * len(clusters)
    for n, pids in sorted(continuing.items()):
        kept = min(pids, key=lambda p: (-size[p], p))
        ids[n] = kept
        for other in pids:
            if other != kept:
                retired[other] = Retired((kept,), "merged")
    for n in sorted(range(len(clusters)), key=lambda i: min(clusters[i], default="")):
        if ids[n] is None:
            ids[n] = _fresh(min(clusters[n]), used, pseudonyms)
            used.add(ids[n] or "")
    final = [i or "" for i in ids]
    for pid, targets in spread.items():
        if not targets:
            retired[pid] = Retired((), "gone")
        elif len(targets) > 1:
            retired[pid] = Retired(tuple(sorted(final[t] for t in targets)), "split")
    ledger = IdLedger(
        key,
        {final[n]: tuple(sorted(members)) for n, members in enumerate(clusters)},
        dict(sorted(retired.items())),
    )
    return final, ledger
