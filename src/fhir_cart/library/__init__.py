"""Knowledge as data: the concept library, terminology, status table, profiles, study
definitions and centre mappings of one mappings folder (``mappings/`` by default), held by
one :class:`Library` the application builds from settings and passes down."""

from fhir_cart.library.core import Library, names_a_file, shipped_folder

__all__ = ["Library", "names_a_file", "shipped_folder"]
