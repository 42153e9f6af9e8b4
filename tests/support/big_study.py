"""A centre B study file of any size: the rows of fixtures/centre_b/centre_b.csv repeated
under new patient ids (B-000001, ...), for the large-upload tests and the page benchmark."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tests.support import CENTRE_B_FILE

__all__ = ["centre_b_file"]


def centre_b_file(patients: int, path: Path) -> Path:
    """``path`` written with ``patients`` rows in centre B's layout (mapping centre_b)."""
    with CENTRE_B_FILE.open(encoding="utf-8-sig", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for n in range(patients):
        row = list(rows[n % len(rows)])
        row[0] = f"B-{n + 1:06d}"
        writer.writerow(row)
    path.write_text(out.getvalue(), encoding="utf-8")
    return path
