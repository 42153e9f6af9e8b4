"""An .xlsx is a zip archive: what it must be before openpyxl is given it.

openpyxl unpacks whatever the archive holds: a 437 KB zip bomb (97 MB of sheet XML) cost
119 s of CPU and 300 MB; a file that is not a zip, is cut short, or holds no workbook ends
as an exception of openpyxl's own. :func:`check_workbook` reads only the archive's directory
(no member is unpacked) and refuses, with the file's name and what to do:

- a file that is not a zip archive (or one truncated: its directory is at the end);
- one without ``xl/workbook.xml`` (a zip, but no Excel workbook);
- more than ``MAX_MEMBERS`` members (Apache POI's default, ``ZipSecureFile``);
- more than ``max_unpacked`` bytes unpacked in all;
- a member of over ``RATIO_FLOOR_BYTES`` that unpacks to more than ``MAX_RATIO`` times its
  packed size (POI's minimum inflate ratio of 0.01; sheet XML compresses 5-20 times);
- an XML part declaring a DTD (``<!DOCTYPE``: Open Packaging Conventions, ECMA-376 part 2,
  forbid them; their entities are how "billion laughs" XML bombs grow), found in the first
  bytes of each part (a DTD can only stand before the root element).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from fhir_cart.errors import InputError, Reject

__all__ = [
    "MAX_MEMBERS",
    "MAX_RATIO",
    "MAX_UNPACKED",
    "WorkbookTooLarge",
    "check_workbook",
]

MAX_MEMBERS = 1000
MAX_RATIO = 100
RATIO_FLOOR_BYTES = 1024 * 1024
MAX_UNPACKED = 100 * 1024 * 1024
_PROLOG_BYTES = 4096
_SAVE_AS = "save it from the spreadsheet program as an Excel workbook (.xlsx), or export a CSV"


class WorkbookTooLarge(InputError):
    """The archive would unpack to more than is allowed (the service answers 413)."""


def _refuse(name: str, reason: str, fix: str, *, too_large: bool = False) -> InputError:
    kind = WorkbookTooLarge if too_large else InputError
    return kind(f"{name}: {reason}; {fix}", [Reject(name, None, None, None, reason)])


def check_workbook(path: Path, *, max_unpacked: int = MAX_UNPACKED) -> None:
    """Raise InputError (WorkbookTooLarge for size) unless ``path`` is a zip archive holding
    an Excel workbook within the limits above. Nothing is unpacked."""
    name = path.name
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        raise _refuse(
            name, "not an .xlsx workbook (not a zip archive, or cut short)", _SAVE_AS
        ) from None
    if len(members) > MAX_MEMBERS:
        raise _refuse(
            name,
            f"the workbook archive holds {len(members)} files (at most {MAX_MEMBERS})",
            _SAVE_AS,
            too_large=True,
        )
    unpacked = sum(m.file_size for m in members)
    if unpacked > max_unpacked:
        raise _refuse(
            name,
            f"the workbook unpacks to {unpacked} bytes (at most {max_unpacked})",
            "split the file or export a CSV",
            too_large=True,
        )
    for member in members:
        if member.file_size > RATIO_FLOOR_BYTES and (
            member.file_size > MAX_RATIO * max(member.compress_size, 1)
        ):
            ratio = member.file_size // max(member.compress_size, 1)
            raise _refuse(
                name,
                f"{member.filename} unpacks to {ratio} times its packed size "
                f"(at most {MAX_RATIO}: a zip bomb?)",
                _SAVE_AS,
                too_large=True,
            )
    if "xl/workbook.xml" not in {m.filename for m in members}:
        raise _refuse(
            name, "a zip archive, but no Excel workbook in it (no xl/workbook.xml)", _SAVE_AS
        )
    with zipfile.ZipFile(path) as archive:
        for member in members:
            if _declares_dtd(archive, member):
                raise _refuse(
                    name,
                    f"{member.filename} declares a DTD (<!DOCTYPE>), which no "
                    "workbook has (the package format forbids them)",
                    _SAVE_AS,
                )


def _declares_dtd(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bool:
    """Whether an XML part starts with a document type declaration (it can only stand in
    the prolog, before the first element: the part's first bytes are enough). A DTD's
    entities are how an XML bomb multiplies itself."""
    if not member.filename.endswith((".xml", ".rels", ".vml")):
        return False
    try:
        with archive.open(member) as part:
            head = part.read(_PROLOG_BYTES)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        return False  # what cannot be unpacked is openpyxl's to refuse (an InputError)
    return b"<!DOCTYPE" in head or "<!DOCTYPE".encode("utf-16-le") in head
