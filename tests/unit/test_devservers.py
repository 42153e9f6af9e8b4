"""The dev servers moved from ``fhir_cart.testing`` to ``fhir_cart.devservers`` (issue 21);
code written against the old package keeps working."""

from __future__ import annotations

import importlib


def test_old_imports_of_the_dev_servers_give_the_same_objects() -> None:
    from fhir_cart.testing.fhir_server import SekmetServer
    from fhir_cart.testing.registry_data import make_registry

    import fhir_cart.devservers as new
    import fhir_cart.testing as old

    assert SekmetServer is new.SekmetServer is old.SekmetServer
    assert old.SERVERS is new.SERVERS
    data = importlib.import_module("fhir_cart.devservers.registry_data")
    assert make_registry is data.make_registry
    for name in ("fhir_server", "medplum_server", "registry_data"):
        module = importlib.import_module(f"fhir_cart.testing.{name}")
        assert module is importlib.import_module(f"fhir_cart.devservers.{name}")
