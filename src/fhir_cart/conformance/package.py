"""The conformance artefacts as a FHIR NPM package (https://hl7.org/fhir/packages.html):

    <out>/package/package.json          name, version, canonical, fhirVersions, dependencies
    <out>/package/.index.json           every resource file with its type, id, url, version
    <out>/package/ImplementationGuide-<package id>.json
    <out>/package/<Type>-<id>.json      StructureDefinitions (with snapshots), CodeSystems,
                                        ValueSets, ConceptMaps
    <out>/data-dictionary.md            the human page (fhir_cart.conformance.dictionary)

The package depends on hl7.fhir.r4.core 4.0.1 and hl7.fhir.us.mcode 4.0.0 (the profiles
the emitted resources claim, mappings/profiles.yaml). A study or registry whose mapping
adds its own concepts or attributes gets its own package the same way
(:func:`study_package_files`), depending on this one.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from fhir_cart.conformance.artefacts import (
    CANONICAL,
    common,
    extension_sds,
    own_code_system,
    study_canonicals,
    study_code_system,
    study_value_sets,
    value_sets,
)
from fhir_cart.conformance.conceptmaps import concept_maps
from fhir_cart.conformance.dictionary import data_dictionary
from fhir_cart.conformance.snapshot import snapshot
from fhir_cart.library.study_mapping import StudyMapping
from fhir_cart.mappers.context import MappingContext, mapping_context
from fhir_cart.types import Json

__all__ = [
    "DEPENDENCIES",
    "PACKAGE_ID",
    "Package",
    "build_package",
    "build_study_package",
    "package_files",
    "stale_files",
    "write_files",
]

PACKAGE_ID = "dev.fhir-cart.case-series"
# the R4 release the resources are written in, and the mCODE release whose profiles they
# claim (mappings/profiles.yaml)
DEPENDENCIES = {"hl7.fhir.r4.core": "4.0.1", "hl7.fhir.us.mcode": "4.0.0"}
_MCODE_IG = "http://hl7.org/fhir/us/mcode/ImplementationGuide/hl7.fhir.us.mcode"
_DUMP = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS


class Package:
    """One package: its id, title, dependencies and resources (IG last)."""

    def __init__(
        self,
        package_id: str,
        title: str,
        dependencies: dict[str, str],
        resources: list[Json],
        canonical: str = CANONICAL,
    ) -> None:
        self.package_id = package_id
        self.title = title
        self.dependencies = dependencies
        self.resources = resources
        self.canonical = canonical


def build_package(ctx: MappingContext, centres: dict[str, StudyMapping]) -> Package:
    """The project's package: every own extension, the own CodeSystem, a ValueSet per
    vocabulary and the centres' ConceptMaps (``centres``: file name -> centre mapping)."""
    mappings = [centres[k] for k in sorted(centres)]
    resources = [snapshot(sd) for sd in extension_sds(ctx, mappings)]
    resources.append(own_code_system(ctx))
    resources += value_sets(ctx)
    resources += concept_maps(ctx, centres)
    title = "fhir_cart case-series conformance artefacts"
    resources.append(_implementation_guide(ctx, PACKAGE_ID, title, DEPENDENCIES, resources))
    return Package(PACKAGE_ID, title, DEPENDENCIES, resources)


def build_study_package(ctx: MappingContext, name: str, mapping: StudyMapping) -> Package:
    """A study's (or registry's) own package: the extensions of the concepts and attributes
    its mapping adds to the library, and its ConceptMap; depends on the project's package."""
    own = {sd["url"] for sd in extension_sds(ctx, [])}
    resources = [snapshot(sd) for sd in extension_sds(ctx, [mapping]) if sd["url"] not in own]
    code_system = study_code_system(ctx, mapping)
    if code_system is not None:
        resources.append(code_system)
    resources += study_value_sets(ctx, mapping)
    # the library with the study's own concepts and words: its local words map to them too
    mine = mapping_context(
        library=ctx.library, extra=mapping.own_concepts(), country=mapping.country
    )
    resources += concept_maps(mine, {name: mapping}, crosswalk=False)
    package_id = f"dev.fhir-cart.{mapping.centre}"
    title = f"fhir_cart additions of {mapping.centre}"
    version = common(ctx)["version"]
    dependencies = {**DEPENDENCIES, PACKAGE_ID: version}
    canonical = next(iter(study_canonicals([mapping])), CANONICAL + "/").removesuffix("/")
    resources.append(
        _implementation_guide(ctx, package_id, title, dependencies, resources, canonical)
    )
    return Package(package_id, title, dependencies, resources, canonical)


def _implementation_guide(
    ctx: MappingContext,
    package_id: str,
    title: str,
    dependencies: dict[str, str],
    resources: list[Json],
    canonical: str = CANONICAL,
) -> Json:
    depends = [{"uri": _MCODE_IG, "packageId": "hl7.fhir.us.mcode", "version": "4.0.0"}]
    if PACKAGE_ID in dependencies:
        depends.append(
            {
                "uri": f"{CANONICAL}/ImplementationGuide/{PACKAGE_ID}",
                "packageId": PACKAGE_ID,
                "version": dependencies[PACKAGE_ID],
            }
        )
    return {
        "resourceType": "ImplementationGuide",
        "id": package_id,
        "url": f"{canonical}/ImplementationGuide/{package_id}",
        **common(ctx),
        "name": "".join(p[:1].upper() + p[1:] for p in package_id.replace("-", ".").split(".")),
        "title": title,
        "description": f"{title}, generated by `fhir-cart artefacts` from the concept library "
        "and the mapping files (docs/fhir-model.md, 'The FHIR package').",
        "packageId": package_id,
        "license": "Apache-2.0",
        "fhirVersion": ["4.0.1"],
        "dependsOn": depends,
        "definition": {
            "resource": [
                {
                    "reference": {"reference": f"{r['resourceType']}/{r['id']}"},
                    "name": r.get("title") or r["id"],
                    "exampleBoolean": False,
                }
                for r in resources
            ]
        },
    }


def _filename(resource: Json) -> str:
    return f"{resource['resourceType']}-{resource['id']}.json"


def _index(resources: list[Json]) -> Json:
    files = []
    for r in resources:
        entry = {"filename": _filename(r), "resourceType": r["resourceType"], "id": r["id"]}
        for key in ("url", "version", "kind", "type"):
            if key in r:
                entry[key] = r[key]
        files.append(entry)
    return {"index-version": 1, "files": sorted(files, key=lambda f: f["filename"])}


def _manifest(ctx: MappingContext, package: Package) -> Json:
    return {
        "name": package.package_id,
        "version": common(ctx)["version"],
        "canonical": package.canonical,
        "url": package.canonical,
        "title": package.title,
        "description": f"{package.title} (FHIR R4): extensions, code systems, value sets, "
        "concept maps.",
        "fhirVersions": ["4.0.1"],
        "type": "IG",
        "license": "Apache-2.0",
        "author": common(ctx)["publisher"],
        "date": common(ctx).get("date", "").replace("-", "") + "000000",
        "dependencies": dict(sorted(package.dependencies.items())),
    }


def package_files(ctx: MappingContext, package: Package) -> dict[str, bytes]:
    """Relative path -> bytes of every file of the package folder and its data dictionary."""
    out = {
        "package/package.json": orjson.dumps(_manifest(ctx, package), option=_DUMP) + b"\n",
        "package/.index.json": orjson.dumps(_index(package.resources), option=_DUMP) + b"\n",
    }
    for resource in package.resources:
        out[f"package/{_filename(resource)}"] = orjson.dumps(resource, option=_DUMP) + b"\n"
    out["data-dictionary.md"] = data_dictionary(ctx, package.package_id, package.resources)
    return dict(sorted(out.items()))


def _present(out_dir: Path) -> set[str]:
    """Files of a package folder (and JSON files left at its top by older versions)."""
    if not out_dir.is_dir():
        return set()
    found = {p.name for p in out_dir.glob("*.json")} | {p.name for p in out_dir.glob("*.md")}
    package = out_dir / "package"
    if package.is_dir():
        found |= {f"package/{p.name}" for p in package.iterdir() if p.is_file()}
    return found


def stale_files(out_dir: Path, wanted: dict[str, bytes]) -> list[str]:
    """Files of ``out_dir`` that differ from ``wanted``, are missing or are not wanted."""
    present = _present(out_dir)
    return sorted(
        name
        for name in present | set(wanted)
        if name not in wanted
        or name not in present
        or (out_dir / name).read_bytes() != wanted[name]
    )


def write_files(out_dir: Path, wanted: dict[str, bytes]) -> None:
    """Write the package folder, removing files of it that are no longer wanted."""
    (out_dir / "package").mkdir(parents=True, exist_ok=True)
    for old in _present(out_dir) - set(wanted):
        (out_dir / old).unlink()
    for name, data in wanted.items():
        (out_dir / name).write_bytes(data)
