"""Conformance tooling: coding statistics, published artefacts (StructureDefinitions,
CodeSystem, ValueSets, ConceptMaps) and checks of emitted resources against mCODE bindings."""
