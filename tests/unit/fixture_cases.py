"""The SYNTHETIC HSCT series and adult CAR-T series as open-model Cases, converted straight
from their generators' rows with the meaning their mapping files (mappings/centres/
hsct_series.yaml, adult_cart.yaml) give them. Summaries and plots are tested on these without
the reader; once the reader reads the fixtures, its cases must summarise the same."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from fhir_cart.records import Case, Event, PatientRecord, Value, When

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"


def generator(relative: str) -> ModuleType:
    path = FIXTURES / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Builder:
    def __init__(self, anchor: str, anchor_date: dt.date) -> None:
        self.anchor = anchor
        self.anchor_date = anchor_date
        self.events: list[Event] = []

    def day(self, day: Any) -> When | None:
        if day in ("", None):
            return None
        day = int(day)
        return When(date=self.anchor_date + dt.timedelta(days=day), day=day, anchor=self.anchor)

    def window(self, earliest: int | None, latest: int | None, anchor: str | None = None) -> When:
        return When(earliest_day=earliest, latest_day=latest, anchor=anchor or self.anchor)

    def add(self, event_id: str, concept: str, **fields: Any) -> None:
        self.events.append(Event(event_id=event_id, concept=concept, **fields))


def _filled(value: Any) -> bool:
    return value not in ("", None)


# -- HSCT series ---------------------------------------------------------------------------

DONOR = {
    "MSD": "matched_sibling",
    "MUD": "matched_unrelated",
    "MMUD": "mismatched_unrelated",
    "haplo": "haploidentical",
}
SOURCE = {"BM": "bone_marrow", "PBSC": "peripheral_blood", "CB": "cord_blood"}
CONDITIONING = {
    "TBI/VP16": "tbi_etoposide",
    "Flu/Thio/Treo": "flu_thiotepa_treosulfan",
    "Flu/Thio/Bu": "flu_thiotepa_busulfan",
    "Flu/Treo": "flu_treosulfan",
}
ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4}
PROPHYLAXIS = {  # column suffix: (concept, when)
    "CsA": ("ciclosporin", {"day": -1}),
    "MTX": ("methotrexate", {"window": (1, 11)}),
    "MMF": ("mycophenolate_mofetil", {"window": (5, 35)}),
    "PTCy": ("cyclophosphamide", {"window": (3, 4)}),
}


def hsct_cases() -> list[Case]:
    cases = []
    for row in generator("hsct_series/make_hsct_series.py").rows():
        pid = str(row["Patient"])
        b = _Builder("hsct", dt.date.fromisoformat(str(row["HSCT date"])))
        b.add(
            "diagnosis",
            "diagnosis",
            value=Value(code="b_all"),
            when=When(date=dt.date.fromisoformat(str(row["Diagnosis date"]))),
        )
        remission = int(str(row["Remission before HSCT"]).removeprefix("CR"))
        b.add(
            "remission_before_hsct",
            "disease_status",
            value=Value(code="complete_remission"),
            attributes={"remission_number": remission},
            when=b.window(None, -1),
        )
        for cycle in (1, 2, 3):
            start = row[f"Blina cycle {cycle} start (day)"]
            if _filled(start):
                b.add(
                    f"blinatumomab_cycle_{cycle}",
                    "blinatumomab",
                    when=b.day(start),
                    attributes={"cycle": cycle, "intent": "consolidation"},
                )
        b.add(
            "mrd_before_hsct",
            "mrd",
            value=Value(code=str(row["MRD before HSCT"])),
            when=b.window(None, -1),
            source_text=str(row["MRD before HSCT"]),
            attributes={"timepoint": "before_hsct", "specimen": "bone_marrow"},
        )
        b.add(
            "hsct",
            "hsct",
            when=b.day(0),
            attributes={
                "donor_type": DONOR[str(row["Donor"])],
                "stem_cell_source": SOURCE[str(row["Stem cell source"])],
                "conditioning": CONDITIONING[str(row["Conditioning"])],
            },
        )
        for suffix, (concept, when) in PROPHYLAXIS.items():
            if row[f"GvHD prophylaxis {suffix}"] == "x":
                time = b.day(when["day"]) if "day" in when else b.window(*when["window"])
                b.add(f"gvhd_prophylaxis_{suffix.lower()}", concept, when=time)
        if _filled(row["ANC engraftment (day)"]):
            b.add(
                "neutrophil_engraftment",
                "neutrophil_engraftment",
                when=b.day(row["ANC engraftment (day)"]),
            )
        if _filled(row["PLT engraftment (day)"]):
            b.add(
                "platelet_engraftment",
                "platelet_engraftment",
                when=b.day(row["PLT engraftment (day)"]),
            )
        if _filled(row["Donor chimerism d+100 (%)"]):
            b.add(
                "chimerism_day_100",
                "chimerism",
                when=b.day(100),
                value=Value(number=float(row["Donor chimerism d+100 (%)"]), unit="%"),  # type: ignore[arg-type]
                attributes={"timepoint": "day_100", "specimen": "peripheral_blood"},
            )
        if _filled(row["aGvHD grade"]):
            b.add(
                "acute_gvhd",
                "acute_gvhd",
                when=b.day(row["aGvHD onset (day)"]),
                attributes={
                    "grade": ROMAN[str(row["aGvHD grade"])],
                    "grading_scale": "magic",
                    "steroid_refractory": row["Steroid-refractory GvHD"] == "yes",
                },
            )
        for column, concept in (
            ("Engraftment syndrome (day)", "engraftment_syndrome"),
            ("CMV reactivation (day)", "cmv_reactivation"),
        ):
            if _filled(row[column]):
                b.add(concept, concept, when=b.day(row[column]))
        if _filled(row["Relapse (day)"]):
            b.add(
                "relapse",
                "disease_status",
                when=b.day(row["Relapse (day)"]),
                value=Value(code="relapse"),
            )
        if _filled(row["Death (day)"]):
            cause = {"relapse": "disease", "GvHD": "gvhd"}.get(str(row["Cause of death"]))
            b.add(
                "death",
                "death",
                when=b.day(row["Death (day)"]),
                attributes={"cause": cause or str(row["Cause of death"])},
            )
        b.add("last_follow_up", "last_follow_up", when=b.day(row["Last follow-up (day)"]))
        patient = PatientRecord(
            study_id=pid,
            centre="hsct-series",
            sex="female" if row["Sex"] == "F" else "male",
            birth_date=dt.date.fromisoformat(str(row["Date of birth"])),
            attributes={"age_at_diagnosis": float(row["Age at diagnosis (y)"])},  # type: ignore[arg-type]
        )
        cases.append(Case(patient=patient, events=tuple(b.events)))
    return cases


# -- adult CAR-T series ----------------------------------------------------------------------

REGIMEN: dict[str, tuple[str, dict[str, Any]]] = {
    "Blinatumomab": ("blinatumomab", {}),
    "Inotuzumab ozogamicin": ("inotuzumab_ozogamicin", {}),
    "alloHSCT": ("hsct", {}),
    "GMALL 08/2013": ("chemotherapy", {"regimen": "gmall_08_2013"}),
    "Hyper-CVAD": ("chemotherapy", {"regimen": "hyper_cvad"}),
    "FLAG-Ida": ("chemotherapy", {"regimen": "flag_ida"}),
}
LD = {"Flu": ("fludarabine", 30.0), "Cy": ("cyclophosphamide", 500.0)}  # mg/m2 after conversion


def _dmy(text: Any) -> dt.date:
    return dt.datetime.strptime(str(text), "%d.%m.%Y").date()


def adult_cases() -> list[Case]:
    module = generator("adult_cart/make_adult_cart.py")
    prior = module.prior_rows()
    ld = module.lymphodepletion_rows()
    tox = module.toxicity_rows()
    cases = []
    for row in module.patient_rows():
        pid = row["Patient ID"]
        b = _Builder("cart_infusion", _dmy(row["CAR-T date"]))
        b.add(
            "diagnosis",
            "diagnosis",
            value=Value(code="b_all"),
            when=When(date=_dmy(row["Diagnosis date"])),
            attributes={"cytogenetics": row["Cytogenetics"]},
        )
        b.add(
            "prior_lines",
            "prior_lines",
            value=Value(number=row["Prior lines"]),
            when=b.window(None, -1),
        )
        b.add(
            "first_remission_duration",
            "first_remission_duration",
            value=Value(number=row["CR1 duration (months)"], unit="mo"),
        )
        b.add(
            "cart_infusion",
            "cart_infusion",
            when=When(date=b.anchor_date),
            attributes={"product": row["CAR-T product"], "cell_dose": row["CAR-T dose (x10^6/kg)"]},
        )
        b.add(
            "response_day_28",
            "disease_status",
            when=b.day(28),
            value=Value(code="complete_remission"),
            attributes={"timepoint": "day_28"},
        )
        assert row["MRD (NGS) after T cells"] in ("negative", "neg", "NGS neg")
        b.add(
            "mrd_after_t_cells",
            "mrd",
            value=Value(code="negative"),
            when=b.window(1, None),
            source_text=row["MRD (NGS) after T cells"],
            attributes={"method": "ngs", "specimen": "bone_marrow", "timepoint": "after_cart"},
        )
        if row["Steroids"] == "yes":
            b.add("steroids", "corticosteroids", when=b.window(1, None))
        if _filled(row["HSCT after CAR-T (day)"]):
            b.add(
                "hsct_after_cart",
                "hsct",
                when=b.day(row["HSCT after CAR-T (day)"]),
                attributes={"donor_type": DONOR[row["HSCT donor"]]},
            )
        if _filled(row["Relapse (day)"]):
            b.add(
                "relapse",
                "disease_status",
                when=b.day(row["Relapse (day)"]),
                value=Value(code="relapse"),
            )
        if _filled(row["Death (day)"]):
            b.add("death", "death", when=b.day(row["Death (day)"]), attributes={"cause": "disease"})
        b.add("last_follow_up", "last_follow_up", when=b.day(row["Last follow-up (day)"]))
        for p in (p for p in prior if p["Patient ID"] == pid):
            concept, attributes = REGIMEN[p["Regimen"]]
            attributes = {**attributes, "line": p["Line"]}
            if p["Best response"]:
                attributes["response"] = {"CR": "response"}.get(p["Best response"], "no_response")
            b.add(
                f"prior_therapy-{p['Line']}",
                concept,
                when=When(date=_dmy(p["Start date"])),
                attributes=attributes,
            )
        for t in (t for t in ld if t["Patient ID"] == pid):
            concept, dose = LD[t["Agent"]]
            b.add(
                f"lymphodepletion-{t['Agent'].lower()}",
                concept,
                when=b.day(t["Day from"]),
                end=b.day(t["Day to"]),
                value=Value(number=dose, unit="mg/m2"),
                source_text=t["Dose"],
                attributes={"intent": "lymphodepletion"},
            )
        for n, t in enumerate((t for t in tox if t["Patient ID"] == pid), start=1):
            b.add(
                f"toxicity-{n}",
                t["Toxicity"].lower(),
                when=b.day(t["Onset (day)"]),
                attributes={"grade": t["Grade"], "grading_scale": "astct_2019"},
            )
        patient = PatientRecord(
            study_id=pid,
            centre="adult-cart",
            sex="female" if row["Sex"] == "f" else "male",
            attributes={"age_at_diagnosis": float(row["Age at diagnosis (years)"])},
        )
        cases.append(Case(patient=patient, events=tuple(b.events)))
    return cases
