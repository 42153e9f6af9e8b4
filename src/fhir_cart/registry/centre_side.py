"""At a centre: its file sealed into the extract it sends to the registry holder, and which
row of its file a Provenance row token stands for. Both read the centre's own file with its
mapping, under the registry key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fhir_cart.errors import ConfigError
from fhir_cart.library.concepts import ConceptLibrary
from fhir_cart.registry.build import CentreReader, read_centre
from fhir_cart.registry.definition import RegistryDef
from fhir_cart.registry.extract import seal
from fhir_cart.registry.pseudonyms import Pseudonymiser
from fhir_cart.registry.sources import source_info

__all__ = ["ExtractResult", "extract_centre", "resolve_rows"]


def resolve_rows(
    definition: RegistryDef,
    tokens: Sequence[str],
    *,
    key: bytes,
    centres: Sequence[str] = (),
    reader: CentreReader = read_centre,
) -> dict[str, tuple[str, str] | None]:
    """At a centre: each Provenance row token -> (centre, ``file, sheet S, row N``), or None
    when no row of the centres read (``centres``, default all whose files are here) gives
    it. Reads the centre's file with its mapping and recomputes every row's token."""
    pseudonyms = Pseudonymiser(key)
    wanted = set(tokens)
    found: dict[str, tuple[str, str] | None] = dict.fromkeys(tokens)
    chosen = [c for c in definition.centres if not centres or c.id in centres]
    unknown = sorted(set(centres) - {c.id for c in definition.centres})
    if unknown:
        raise ConfigError(f"registry file: no centre {', '.join(unknown)}")
    for centre in chosen:
        if centre.data is None or (not centres and not definition.resolve(centre.data).exists()):
            continue  # another centre's file: not held here
        data = reader(centre, definition)
        for located in data.sources.values():
            for location in located.values():
                token = pseudonyms.source_row(centre.id, location)
                if token in wanted:
                    found[token] = (centre.id, location)
    return found


@dataclass
class ExtractResult:
    out: Path
    records: int
    rejects: int
    key_fingerprint: str


def extract_centre(
    definition: RegistryDef,
    centre_id: str,
    data_path: Path,
    mapping_path: Path,
    out: Path,
    *,
    key: bytes,
    library: ConceptLibrary | None = None,
    reader: CentreReader = read_centre,
) -> ExtractResult:
    """At a centre: its file read with its mapping, sealed under the registry key and
    written as one extract (:mod:`.extract`) for the registry holder."""
    from fhir_cart.registry.extract import Manifest, write_extract

    try:
        known = definition.centre(centre_id)
    except KeyError:
        names = ", ".join(c.id for c in definition.centres)
        raise ConfigError(
            f"registry file: no centre {centre_id} (it names {names}); use --centre with one "
            "of these"
        ) from None
    pseudonyms = Pseudonymiser(key)
    source = source_info(centre_id, data_path, mapping_path)
    centre = known.model_copy(
        update={"data": data_path.resolve(), "mapping": mapping_path.resolve(), "extract": None}
    )
    data = reader(centre, definition)
    sealed = seal(
        centre_id,
        data.cases,
        data.rejects,
        [str(c) for c in data.unmapped_columns],
        data.sources,
        definition,
        pseudonyms,
        library,
    )
    manifest = Manifest(
        centre=centre_id,
        registry=definition.id,
        key=pseudonyms.fingerprint(),
        records=len(sealed.cases),
        source={
            "file_sha256": source.file_sha256,
            "mapping_sha256": source.mapping_sha256,
            "recorded": source.recorded,
        },
    )
    write_extract(out, sealed, manifest)
    return ExtractResult(out, len(sealed.cases), len(data.rejects), pseudonyms.fingerprint())
