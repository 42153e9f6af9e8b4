"""A read-only FHIR R4 search server on 127.0.0.1 for measuring a pull's memory at sizes a
real test server cannot be loaded to in a session (sekmet-fhir took 32 minutes for 10,000
patients here): ``copies`` copies of a template cohort, made on the fly from fhir_cart's own
transaction bundles of it.

    python benchmarks/stub_fhir.py BUNDLES.ndjson COPIES PORT

``BUNDLES.ndjson``: one transaction Bundle a line (``bench_sync.prepare``). Each resource gets
the id of its ``urn:uuid:`` fullUrl and references become ``Type/id``. Copy ``c`` of a
resource is its JSON text with every UUID's last 8 hex digits set to ``c`` and every study id
``B0000nnn`` made ``Bccccnnn`` (so ids, identifiers and references stay distinct across
copies). It answers only what ``fhir-cart pull --search identifier=SYSTEM| --types library``
asks: ``metadata`` (the types' ``subject``/``patient`` search parameters; AdverseEvent none,
as on sekmet-fhir 0.1.1, so it is read by type), the Patient search by identifier system,
``subject=Patient/a,...`` / ``patient=...`` searches, and by-type reads, each paged with
``_count`` and ``_offset``. Anything else is a 404 (and a line on stderr). It is a benchmark
aid, not a FHIR server: no conformance is claimed beyond those answers.
"""

from __future__ import annotations

import bisect
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import orjson

_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_STUDY_ID = re.compile(rb"B0000(\d{3})")
SEARCHED = ("Condition", "MedicationAdministration", "MedicationRequest", "Observation")
SEARCHED += ("MedicationStatement", "MedicationDispense", "Procedure", "Specimen")
SCANNED = ("AdverseEvent",)


def _owner(resource: dict[str, object], types: dict[str, str]) -> str:
    if resource["resourceType"] == "Patient":
        return str(resource["id"])
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and str(ref.get("reference", "")).startswith("Patient/"):
            return str(ref["reference"]).split("/", 1)[1]
    raise SystemExit(f"{resource['resourceType']}/{resource['id']} names no patient")


def load_template(path: str) -> tuple[list[str], dict[str, list[tuple[str, bytes]]]]:
    """(patient ids in identifier order, per patient id its resources as (type, JSON))."""
    entries = []
    types: dict[str, str] = {}
    with open(path, "rb") as handle:
        for line in handle:
            for entry in orjson.loads(line)["entry"]:
                uuid = entry["fullUrl"].removeprefix("urn:uuid:")
                types[uuid] = entry["resource"]["resourceType"]
                entries.append((uuid, entry["resource"]))
    by_patient: dict[str, list[tuple[str, bytes]]] = {}
    identifiers: dict[str, str] = {}
    for uuid, resource in entries:
        text = orjson.dumps({**resource, "id": uuid}).decode()
        text = re.sub(r"urn:uuid:([0-9a-f-]{36})", lambda m: f"{types[m[1]]}/{m[1]}", text)
        resource = orjson.loads(text)
        owner = _owner(resource, types)
        by_patient.setdefault(owner, []).append((resource["resourceType"], text.encode()))
        if resource["resourceType"] == "Patient":
            identifiers[owner] = resource["identifier"][0]["value"]
    order = sorted(identifiers, key=identifiers.__getitem__)
    if len({p[:-8] for p in order}) != len(order):
        raise SystemExit("two template patients share an id prefix")
    return order, by_patient


class Cohort:
    def __init__(self, path: str, copies: int) -> None:
        self.order, self.by_patient = load_template(path)
        self.copies = copies
        self.prefix = {p[:-8]: n for n, p in enumerate(self.order)}
        self.scan_counts: dict[str, list[int]] = {}
        for rtype in SCANNED:  # cumulative counts per template patient, for offsets
            counts, total = [], 0
            for pid in self.order:
                total += sum(1 for t, _ in self.by_patient[pid] if t == rtype)
                counts.append(total)
            self.scan_counts[rtype] = counts

    @property
    def patients(self) -> int:
        return len(self.order) * self.copies

    @staticmethod
    def copy(text: bytes, c: int) -> bytes:
        tail = b"%08x" % c
        text = _UUID.sub(lambda m: m[0][:-8] + tail, text)
        return _STUDY_ID.sub(lambda m: b"B%04d" % c + m[1], text)

    def patient(self, index: int) -> bytes:
        c, n = divmod(index, len(self.order))
        pid = self.order[n]
        return self.copy(next(t for k, t in self.by_patient[pid] if k == "Patient"), c)

    def of(self, rtype: str, patient_id: str) -> list[bytes]:
        n = self.prefix.get(patient_id[:-8])
        try:
            c = int(patient_id[-8:], 16)
        except ValueError:
            return []
        if n is None or c >= self.copies:
            return []
        return [self.copy(t, c) for k, t in self.by_patient[self.order[n]] if k == rtype]

    def scanned(self, rtype: str, offset: int, count: int) -> tuple[int, list[bytes]]:
        counts = self.scan_counts[rtype]
        per_copy = counts[-1]
        out: list[bytes] = []
        index = offset
        while len(out) < count and index < per_copy * self.copies:
            c, rem = divmod(index, per_copy)
            n = bisect.bisect_right(counts, rem)
            before = counts[n - 1] if n else 0
            mine = [t for k, t in self.by_patient[self.order[n]] if k == rtype]
            take = mine[rem - before : rem - before + count - len(out)]
            out += [self.copy(t, c) for t in take]
            index += len(take)
        return per_copy * self.copies, out


def capability() -> bytes:
    resources = [{"type": "Patient", "searchParam": [{"name": "identifier", "type": "token"}]}]
    for rtype in SEARCHED:
        params = [{"name": n, "type": "reference"} for n in ("subject", "patient")]
        resources.append({"type": rtype, "searchParam": params})
    resources += [{"type": t, "searchParam": []} for t in SCANNED]
    return orjson.dumps(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "software": {"name": "fhir_cart benchmarks/stub_fhir.py"},
            "rest": [{"mode": "server", "resource": resources}],
        }
    )


def bundle(base: str, total: int, entries: list[bytes], next_url: str | None) -> bytes:
    links = [{"relation": "next", "url": next_url}] if next_url else []
    head = orjson.dumps(
        {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links}
    )
    body = b",".join(b'{"resource":' + e + b',"search":{"mode":"match"}}' for e in entries)
    return head[:-1] + b',"entry":[' + body + b"]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cohort: Cohort

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path.removeprefix("/fhir").strip("/")
        base = f"http://{self.headers.get('Host')}/fhir"
        count = int(query.get("_count", "100"))
        offset = int(query.get("_offset", "0"))
        if path == "metadata":
            return self._send(200, capability())
        cohort = self.cohort
        if path == "Patient" and "identifier" in query:
            total = cohort.patients
            entries = [cohort.patient(i) for i in range(offset, min(total, offset + count))]
        elif path in SEARCHED and ("subject" in query or "patient" in query):
            ids = (query.get("subject") or query["patient"]).split(",")
            found = [r for i in ids for r in cohort.of(path, i.removeprefix("Patient/"))]
            total, entries = len(found), found[offset : offset + count]
        elif path in SCANNED and set(query) <= {"_count", "_offset"}:
            total, entries = cohort.scanned(path, offset, count)
        else:
            print(f"stub_fhir: not answered: GET {self.path[:200]}", file=sys.stderr)
            return self._send(404, b'{"resourceType":"OperationOutcome","issue":[]}')
        next_url = None
        if offset + len(entries) < total:
            rest = {k: v for k, v in query.items() if k != "_offset"}
            q = "&".join(f"{k}={v}" for k, v in rest.items())
            next_url = f"{base}/{path}?{q}&_offset={offset + len(entries)}"
        self._send(200, bundle(base, total, entries, next_url))


def main() -> None:
    path, copies, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    Handler.cohort = Cohort(path, copies)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"stub_fhir: {Handler.cohort.patients} patients on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
