"""`fhir-cart registry build` as a user runs it (the sub-app; fhir_cart.cli registers it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fhir_cart.cli.registry import registry_app
from fhir_cart.errors import ConfigError
from fhir_cart.registry.definition import load_registry

FIXTURES = Path(__file__).parents[3] / "fixtures" / "registry"
KEY = "cli-test-key-0123456789abcdef0123456789"


def test_without_a_key_nothing_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FHIR_CART_REGISTRY_KEY", raising=False)
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    result = CliRunner().invoke(
        registry_app, ["build", str(FIXTURES / "registry.yaml"), "-o", str(tmp_path / "out")]
    )
    assert isinstance(result.exception, ConfigError)
    assert "FHIR_CART_REGISTRY_KEY" in result.exception.message
    assert not (tmp_path / "out").exists()


def test_a_short_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_CART_REGISTRY_KEY", "short")
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    result = CliRunner().invoke(
        registry_app, ["build", str(FIXTURES / "registry.yaml"), "-o", str(tmp_path / "out")]
    )
    assert isinstance(result.exception, ConfigError)
    assert "shorter than 32 bytes" in result.exception.message


def test_a_key_in_the_registry_file_is_refused(tmp_path: Path) -> None:
    text = (FIXTURES / "registry.yaml").read_text()
    bad = tmp_path / "registry.yaml"
    bad.write_text(text.replace("  anchor: diagnosis", "  anchor: diagnosis\n  key: abc"))
    with pytest.raises(ConfigError, match=r"pseudonymisation\.key: a key never goes"):
        load_registry(bad)


def test_the_documented_example_loads() -> None:
    registry = load_registry(FIXTURES / "registry.yaml")
    assert [c.id for c in registry.centres] == ["berlin", "london", "rotterdam"]
    assert registry.preference("cart_infusion")[0][:2] == ["london", "rotterdam"]
    assert registry.preference("diagnosis")[0][0] == "berlin"


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_build_prints_the_outcome_and_is_up_to_date_the_second_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FHIR_CART_REGISTRY_KEY", KEY)
    monkeypatch.setenv("FHIR_CART_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    args = ["build", str(FIXTURES / "registry.yaml"), "-o", str(tmp_path / "out")]
    first = CliRunner().invoke(registry_app, args)
    assert first.exit_code == 0, first.output
    assert "8 patients (2 in more than one centre)" in first.output
    assert "3 conflicts" in first.output
    # the table is titled with the registry's name; Ben's pair, linked by his national id
    # and by splink, is one link (links.csv lists both methods)
    assert "Paediatric CAR-T registry (synthetic)" in first.output
    links = (tmp_path / "out" / "reports" / "links.csv").read_text().splitlines()[1:]
    pairs = {tuple(sorted(row.split(",")[:2])) for row in links}
    assert (len(links), len(pairs)) == (3, 2)
    assert "2 links," in first.output
    assert (tmp_path / "out" / "reports" / "conflicts.csv").exists()
    assert (tmp_path / "data" / "registry" / "ped-cart" / "centres" / "berlin.json").exists()
    second = CliRunner().invoke(registry_app, args)
    assert "up to date" in " ".join(second.output.split())  # rich wraps long paths


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_provenance_cites_rows_by_token_that_only_the_centre_resolves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("FHIR_CART_REGISTRY_KEY", KEY)
    monkeypatch.setenv("FHIR_CART_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    registry = str(FIXTURES / "registry.yaml")
    built = CliRunner().invoke(registry_app, ["build", registry, "-o", str(tmp_path / "out")])
    assert built.exit_code == 0, built.output
    text = (tmp_path / "out" / "fhir" / "Provenance.ndjson").read_text()
    for needle in ("berlin.csv", "events.csv", "london.csv", "patients.csv"):
        assert needle not in text, needle
    assert not re.search(r"row \d", text)
    tokens = sorted(
        entity["what"]["identifier"]["value"]
        for line in text.splitlines()
        for entity in json.loads(line)["entity"]
        if entity["what"]["identifier"]["system"].endswith("/source-row")
    )
    assert len(tokens) >= 8
    resolved = CliRunner().invoke(registry_app, ["resolve", registry, *tokens])
    assert resolved.exit_code == 0, resolved.output
    assert "berlin: berlin.csv, row 2\n" in resolved.output  # Anna's row (header is row 1)
    assert resolved.output.count(": rotterdam: events.csv, row ") >= 3
    only = CliRunner().invoke(registry_app, ["resolve", registry, *tokens, "--centre", "london"])
    assert only.exit_code == 1  # the other centres' tokens are not London's rows
    assert "london: london.csv, row 2" in only.output
    monkeypatch.setenv("FHIR_CART_REGISTRY_KEY", "another-key-0123456789abcdef0123456789")
    other = CliRunner().invoke(registry_app, ["resolve", registry, tokens[0]])
    assert other.exit_code == 1
    assert "not a row of the files read here" in other.output
