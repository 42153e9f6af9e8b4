"""The CLI against a FHIR server that misbehaves (a scripted one on 127.0.0.1): links to
another origin, HTML pages, truncated JSON, resources without ids, endless paging, no
server at all. Each ends in one clear line and exit code 6, never a traceback, and the
server's credentials never reach the other origin."""

from __future__ import annotations

import csv
import socket
from pathlib import Path
from typing import Any

import pytest

from fhir_cart.cli import main
from fhir_cart.sync.pull import EVENT_TYPES
from tests.hostile import Answer, HostileServer, Seen, bundle, capabilities, fhir_json
from tests.support import SEED_FILE, SEED_MAPPING

TOKEN = "tok-SECRET-4711"
EVENTS = EVENT_TYPES  # every type a pull fetches, so the scripted server answers each


@pytest.fixture
def server() -> Any:
    with HostileServer() as hostile:
        hostile.routes["/fhir/metadata"] = capabilities(*EVENTS)
        for rtype in EVENTS:
            hostile.routes[f"/fhir/{rtype}"] = bundle([])
        yield hostile


@pytest.fixture
def foreign() -> Any:
    with HostileServer() as hostile:
        yield hostile


def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, **extra: str) -> None:
    monkeypatch.setenv("FHIR_CART_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("FHIR_CART_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FHIR_CART_CACHE_URL", f"sqlite:///{tmp_path / 'cache.sqlite'}")
    prefix = "FHIR_CART_SERVERS__H__"
    monkeypatch.setenv(prefix + "BASE_URL", url)
    monkeypatch.setenv(prefix + "AUTH__TYPE", "bearer")
    monkeypatch.setenv(prefix + "AUTH__TOKEN", TOKEN)
    monkeypatch.setenv(prefix + "MAX_RETRIES", "0")
    for name, value in extra.items():
        monkeypatch.setenv(prefix + name.upper(), value)


def pull(tmp_path: Path, *args: str) -> int:
    out = tmp_path / "out"
    return main(
        [
            "pull",
            "--server",
            "h",
            "--out",
            str(out),
            *(args or ("--search", "name=x")),
            "--format",
            "csv",
        ]
    )


def one_clean_error(capsys: pytest.CaptureFixture[str], words: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert words in err
    assert TOKEN not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return err


PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "2010-01-01"}


def test_a_next_link_to_another_origin_is_refused_and_gets_no_token(
    server: HostileServer,
    foreign: HostileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    foreign.routes["/fhir/Patient"] = bundle([{"resourceType": "Patient", "id": "evil"}])
    server.routes["/fhir/Patient"] = bundle([PATIENT], f"{foreign.url}/fhir/Patient?page=2")
    settings_env(monkeypatch, tmp_path, f"{server.url}/fhir")
    assert pull(tmp_path) == 6
    one_clean_error(capsys, "another origin")
    assert foreign.seen == []
    assert not (tmp_path / "out" / "patients.csv").exists()
    assert all(s.headers.get("Authorization") == f"Bearer {TOKEN}" for s in server.seen)


def _export(server: HostileServer, status_url: str, manifest: dict[str, Any] | None) -> None:
    server.routes["/fhir/Group/g1/$export"] = (202, {"Content-Location": status_url}, b"")
    if manifest is not None:
        server.routes["/fhir/status/1"] = fhir_json(manifest)


def test_an_export_status_url_on_another_origin_is_refused(
    server: HostileServer,
    foreign: HostileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _export(server, f"{foreign.url}/status/1", None)
    foreign.routes["/status/1"] = fhir_json({"output": []})
    settings_env(monkeypatch, tmp_path, f"{server.url}/fhir")
    assert pull(tmp_path, "--group", "g1", "--export") == 6
    one_clean_error(capsys, "another origin")
    assert foreign.seen == []


NDJSON_PATIENT = b'{"resourceType": "Patient", "id": "p9"}\n'


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@pytest.mark.parametrize(
    ("requires_token", "allow", "code"),
    [(True, "true", 6), (False, "false", 6), (False, "true", 0)],
)
def test_export_files_on_another_origin_go_without_credentials_or_not_at_all(
    server: HostileServer,
    foreign: HostileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    requires_token: bool,
    allow: str,
    code: int,
) -> None:
    foreign.routes["/files/p.ndjson"] = (200, {}, NDJSON_PATIENT)
    output = {"type": "Patient", "url": f"{foreign.url}/files/p.ndjson"}
    manifest = {"requiresAccessToken": requires_token, "output": [output]}
    _export(server, f"{server.url}/fhir/status/1", manifest)
    settings_env(monkeypatch, tmp_path, f"{server.url}/fhir", allow_foreign_export_files=allow)
    assert pull(tmp_path, "--group", "g1", "--export") == code
    if code:
        assert foreign.seen == []
    else:
        assert [s.path for s in foreign.seen] == ["/files/p.ndjson"]
        assert "Authorization" not in foreign.seen[0].headers


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ((200, {"Content-Type": "text/html"}, b"<html>sign in</html>"), "not JSON (text/html)"),
        (
            (200, {"Content-Type": "application/fhir+json"}, b'{"resourceType": "Bundle", "en'),
            "not JSON",
        ),
        (fhir_json({"resourceType": "OperationOutcome"}), "not a Bundle"),
    ],
)
def test_a_malformed_answer_ends_in_one_line_and_exit_6(
    server: HostileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answer: Answer,
    words: str,
) -> None:
    server.routes["/fhir/Patient"] = answer
    settings_env(monkeypatch, tmp_path, f"{server.url}/fhir")
    assert pull(tmp_path) == 6
    one_clean_error(capsys, words)


def test_resources_without_id_or_subject_are_listed_not_lost(
    server: HostileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nameless = {"resourceType": "Patient", "gender": "male"}
    server.routes["/fhir/Patient"] = bundle([PATIENT, nameless])
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    server.routes["/fhir/Observation"] = bundle(
        [
            {**obs, "subject": {"reference": "Patient/p1/_history/3"}},  # no id
            {**obs, "id": "o2"},  # no subject
            {**obs, "id": "o3", "subject": {"reference": "Patient/p1/_history/3"}},
        ]
    )
    settings_env(monkeypatch, tmp_path, f"{server.url}/fhir")
    assert pull(tmp_path) == 0
    assert (tmp_path / "out" / "patients.csv").exists()
    with (tmp_path / "out" / "unmapped.csv").open() as handle:
        listed = {(r["reference"], r["reason"]) for r in csv.DictReader(handle)}
    assert ("Patient/(no id)", "resource without a valid id") in listed
    assert ("Observation/(no id)", "resource without a valid id") in listed
    assert ("Observation/o2", "no subject or patient reference to a Patient") in listed
    # a versioned subject reference still belongs to p1: it reaches the mapper (whose verdict
    # on this bare Observation is "not understood"), instead of vanishing
    assert any(ref.endswith("Observation/o3") for ref, _ in listed), listed


@pytest.mark.slow  # takes seconds: the full suite runs it, not the fast loop
def test_endless_next_links_stop_at_the_page_budget(
    server: HostileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def page(seen: Seen) -> Answer:
        n = len(server.seen)
        return bundle([PATIENT], f"{server.url}/fhir/Patient?page={n}")

    server.routes["/fhir/Patient"] = page
    settings_env(monkeypatch, tmp_path, f"{server.url}/fhir", max_pages_per_pull="20")
    assert pull(tmp_path) == 6
    one_clean_error(capsys, "max_pages_per_pull")
    assert sum(s.path != "/fhir/metadata" for s in server.seen) == 20  # every search page


def test_too_many_resources_stop_the_pull(
    server: HostileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server.routes["/fhir/Patient"] = bundle([{**PATIENT, "id": f"p{i}"} for i in range(5)])
    settings_env(monkeypatch, tmp_path, f"{server.url}/fhir", max_resources_per_pull="3")
    assert pull(tmp_path) == 6
    one_clean_error(capsys, "max_resources_per_pull")


def test_a_push_to_an_unreachable_server_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings_env(monkeypatch, tmp_path, f"http://127.0.0.1:{port}/fhir")
    code = main(["push", str(SEED_FILE), "-m", str(SEED_MAPPING), "--server", "h"])
    assert code == 6
    err = one_clean_error(capsys, "cannot reach the FHIR server")
    assert "failed" not in err
