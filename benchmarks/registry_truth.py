"""Truth-labelled multi-centre registry data (SYNTHETIC), written apart from the project's
own generator (``fhir_cart.devservers.registry_data``): this module imports nothing of
fhir_cart, so what the benchmark measures is not what the code under test assumes.

    persons = make_persons(30_000, seed=7)
    truth = write_centres(persons, folder, seed=7)   # files, mappings, registry.yaml

Persons are children with leukaemia (diagnosis, for some a CAR-T infusion and a transplant)
with names from ten naming traditions, drawn with Zipf-like frequencies so that common
names repeat (look-alikes by chance), and:

- twins (1.5 % of persons): same family name, birth date and usually the same centres,
  their own given names, sex the same or not, diagnosis dates close; in a quarter of the
  pairs one centre wrote the co-twin's insurance number into a twin's record (the mix-up);
- planted look-alikes (1 %): another person with the same given and family name, sex and
  birth month (or birth day in another year);
- name changes (4 %): a birth name and a later family name; centres recorded either;
- 20 % of persons seen at 2 or 3 centres.

Each record a centre writes is corrupted at rates typical of hand-entered registry data:
given and family names mistyped (one key), written without their accents or umlauts (or
with ``ue`` for ``ü``), transliterated (Arabic names: Mohammed / Muhammad / Mohamed),
particles dropped or glued (``van den Berg``, ``Berg``, ``Vandenberg``), double and
hyphenated surnames cut to one part, compound given names cut; dates with day and month
transposed, a digit mistyped, a few days off or missing; sex missing or wrong; insurance
numbers missing, typed with one wrong digit, written with spaces or dashes.

Ten centres use nine layouts (column names in their language, delimiters, encodings,
date formats, sex codes, CSV or XLSX with text or date cells, family names in capitals,
a birth-name column or not, an insurance-number column or not, birth month only).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import random
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LAYOUTS", "Person", "Truth", "make_persons", "write_centres"]

# -- names ---------------------------------------------------------------------------

# Each tradition: its code, then girls' given names | boys' given names | family names
# ("_" stands for a space; "a/b": a for boys, b for girls, as Polish -ski/-ska).
_NAME_TABLE = """
de
  Anna Lena Sophie Marie Emilia Hannah Lea Mia Lina Clara Charlotte Greta Jülide Frieda
  Käthe Ida Mila Ella Johanna Luisa Anna-Lena Marie-Sophie |
  Paul Ben Jonas Leon Finn Elias Noah Felix Lukas Maximilian Jörg Jürgen Lutz Moritz
  Karl-Heinz Tim Jan Niklas Fabian Björn Till |
  Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer Koch
  Bauer Richter Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann
  Lange Schmitt Werner Krause Meier Lehmann Köhler Herrmann König Walter Mayer Huber Kaiser
  Fuchs Peters Möller Weiß Jung Hahn Vogel Günther Groß Jäger Krämer Böhm Kühn
  Müller-Lüdenscheidt Schmidt-Weber Graf-Höller von_Bülow von_der_Heide
tr
  Elif Zeynep Ayşe Büşra Merve Özge Defne Eylül Ecrin Nisa Yağmur Gül |
  Mehmet Mustafa Ahmet Yusuf Emre Çağan Oğuz Burak Eren Kerem Ömer İbrahim |
  Yılmaz Kaya Demir Şahin Çelik Yıldız Yıldırım Öztürk Aydın Özdemir Arslan Doğan Kılıç
  Aslan Çetin Kara Koç Kurt Özkan Şimşek
pl
  Zofia Zuzanna Małgorzata Łucja Hanna Julia Maja Wiktoria Agnieszka Katarzyna |
  Jakub Łukasz Wojciech Michał Paweł Szymon Kacper Mikołaj Grzegorz Tomasz |
  Nowak Kowalski/Kowalska Wiśniewski/Wiśniewska Wójcik Kowalczyk Kamiński/Kamińska
  Lewandowski/Lewandowska Zieliński/Zielińska Szymański/Szymańska Woźniak
  Dąbrowski/Dąbrowska Kozłowski/Kozłowska Mazur Krawczyk Grabowski/Grabowska
nl
  Sanne Femke Noor Fleur Lotte Saar Julia Tess Isa Anouk |
  Daan Sem Lucas Bram Thijs Jesse Ruben Stijn Gijs Sven |
  Jansen Bakker Janssen Visser Smit Meijer Mulder Bos Vos Hendriks Dekker Brouwer Dijkstra
  Smits de_Jong de_Vries van_den_Berg van_Dijk de_Boer de_Groot van_Leeuwen de_Wit de_Graaf
  van_der_Meer
es
  Lucía Sofía Martina María_José Paula Valentina Ana_Belén |
  Hugo Martín Álvaro Pablo Íñigo Juan_Carlos Mateo Andrés |
  García_López Rodríguez_Martínez González_Pérez Fernández_Gómez López_Ruiz Martínez_Díaz
  Sánchez_Moreno Pérez_Muñoz Gómez_Álvarez Jiménez_Romero Ruiz_Navarro Hernández_Torres
  Díaz_Domínguez Moreno_Vázquez Muñoz_Ramos Álvarez_García
fr
  Léa Chloé Inès Zoé Anaïs Maëlle Camille Manon Élodie Marie-Ève |
  Louis Gabriel Raphaël Noé Jean-Baptiste Théo Hugo Mathéo Loïc François |
  Martin Bernard Dubois Thomas Robert Richard Petit Durand Leroy Moreau Laurent Lefèvre
  Michel David Bertrand Roux Fournier Girard André Mercier Dupont Lambert Bonnet François
ar
  Fatima Aisha Yasmin Layla Mariam Nour Salma Zainab Huda Amira |
  Mohammed Ahmad Omar Youssef Ali Hassan Khalid Ibrahim Karim Tariq |
  Al-Hassan Haddad Khalil Youssef Saleh Ibrahim Hussein Abdallah Mansour Nasser El-Amin
  Qasim
se
  Åsa Freja Saga Elsa Maja Ebba Linnéa Astrid |
  Björn Søren Oskar Nils Axel Elias Örjan Måns |
  Sørensen Jørgensen Ångström Åberg Lindqvist Johansson Andersson Nilsson Eriksson Lindström
  Bergström Sjöberg
en
  Olivia Amelia Isla Ava Grace Mary-Kate Freya Poppy Evie Sophie |
  Oliver George Harry Jack Noah Charlie Arthur Leo Oscar Alfie |
  Smith Jones Williams Taylor Brown Davies Evans Wilson Thomas Roberts O'Brien McDonald
  O'Connor Walker Wright Robinson
it
  Giulia Sofia Aurora Alice Ginevra Emma Beatrice Chiara |
  Leonardo Francesco Niccolò Alessandro Lorenzo Mattia Andrea Gabriele |
  Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Conti Gallo De_Luca
  Di_Stefano D'Angelo Lo_Russo
"""


def _traditions() -> list[tuple[str, list[str], list[str], list[str]]]:
    found: list[tuple[str, list[str], list[str], list[str]]] = []
    code, text = "", ""
    for line in [*_NAME_TABLE.strip().splitlines(), "end"]:
        if line.startswith(" "):
            text += " " + line.strip()
            continue
        if code:
            girls, boys, families = (
                [w.replace("_", " ") for w in part.split()] for part in text.split("|")
            )
            found.append((code, girls, boys, families))
        code, text = line.strip(), ""
    return found


_TRADITIONS = _traditions()
# how many persons of each tradition (Germany-centred registry)
_TRADITION_SHARE = [0.34, 0.1, 0.1, 0.09, 0.07, 0.08, 0.08, 0.05, 0.05, 0.04]

# transliterations a clerk may choose for a name (each spelling equally canonical)
_VARIANTS = [
    set(g.split())
    for g in """
Mohamed Mohammad Mohammed Muhammad
Ahmad Ahmed
Aischa Aisha Ayesha Aysha
Jasmin Yasmin Yasmine
Laila Layla Leila
Jussuf Yousef Youssef Yusuf
Husain Hussain Hussein
Chalil Khaleel Khalil
Omar Umar
Mariam Maryam Miriam
Zainab Zeinab
Abdallah Abdullah
Al-Hassan Alhassan El-Hassan
Saleh Salih
Kasim Kassim Qasim
Tarek Tarik Tariq
Nour Nur
Mansour Mansur
MacDonald McDonald
Sofie Sophie
Sören Søren
Kareem Karim
""".strip().splitlines()
]
_VARIANT_OF = {name: sorted(group) for group in _VARIANTS for name in group}

# what a clerk without the letter writes instead (ASCII folding), and the German way
_FOLD = str.maketrans(
    {
        "ı": "i",
        "İ": "I",
        "ş": "s",
        "Ş": "S",
        "ğ": "g",
        "ç": "c",
        "Ç": "C",
        "ł": "l",
        "Ł": "L",
        "ø": "o",
        "Ø": "O",
        "æ": "ae",
        "ß": "ss",
    }
)
_GERMAN = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})
_KEYS = "qwertyuiopasdfghjklzxcvbnm"


def ascii_fold(text: str) -> str:
    """'Öztürk' -> 'Ozturk', 'Łucja' -> 'Lucja' (accents and special letters dropped)."""
    text = text.translate(_FOLD)
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _typo(text: str, rng: random.Random) -> str:
    """One slip of the keyboard: a letter replaced, dropped, doubled, or two swapped."""
    spots = [i for i, c in enumerate(text) if c.isalpha()]
    if len(spots) < 3:
        return text
    i = rng.choice(spots[1:])
    kind = rng.random()
    if kind < 0.35:
        return text[:i] + rng.choice(_KEYS) + text[i + 1 :]
    if kind < 0.6:
        return text[:i] + text[i + 1 :]
    if kind < 0.8:
        return text[:i] + text[i] + text[i:]
    j = i - 1
    return text[:j] + text[i] + text[j] + text[i + 1 :]


# -- persons -------------------------------------------------------------------------


@dataclass
class Person:
    id: int
    sex: str  # female | male
    given: str
    family: str
    birth_name: str | None  # the family name at birth, when it changed
    born: dt.date
    insurance: str
    diagnosis: str
    diagnosed: dt.date
    infused: dt.date | None
    transplanted: dt.date | None
    centres: list[int]
    twin: int | None = None
    tradition: int = 0


@dataclass
class Truth:
    """What the benchmark scores against."""

    person_of: dict[tuple[str, str], int] = field(default_factory=dict)
    """(centre, the centre's patient id) -> person."""
    twins: list[tuple[int, int]] = field(default_factory=list)
    mixups: list[tuple[str, str, int]] = field(default_factory=list)
    """(centre, patient id of the record, the co-twin whose insurance number it holds)."""
    lookalikes: list[tuple[int, int]] = field(default_factory=list)


def _zipf(n: int, s: float = 1.0) -> list[float]:
    return [1 / (k + 1) ** s for k in range(n)]


def _family(raw: str, sex: str) -> str:
    if "/" in raw:
        boy, girl = raw.split("/")
        return girl if sex == "female" else boy
    return raw


def _name(rng: random.Random, tradition: int, sex: str) -> tuple[str, str]:
    _, girls, boys, families = _TRADITIONS[tradition]
    pool = girls if sex == "female" else boys
    given = rng.choices(pool, _zipf(len(pool), 0.8))[0]
    family = rng.choices(families, _zipf(len(families), 0.9))[0]
    return given, _family(family, sex)


def _centre_sizes(centres: int) -> list[float]:
    return [1.0 / (1 + 0.25 * c) for c in range(centres)]


CUTOFF = dt.date(2026, 6, 30)
"""Nothing happened after this day (a reader may refuse a date in the future)."""


def _clinical(
    rng: random.Random, born: dt.date, diagnosed: dt.date | None = None
) -> tuple[str, dt.date, dt.date | None, dt.date | None]:
    if diagnosed is None:
        latest = max(61, min(17 * 365, (CUTOFF - born).days))
        age_days = int(rng.triangular(60, latest, min(4 * 365, latest)))
        diagnosed = born + dt.timedelta(days=age_days)
    diagnosed = min(diagnosed, CUTOFF)
    diagnosis = rng.choices(["B-ALL", "T-ALL", "AML"], [0.7, 0.15, 0.15])[0]
    infused = diagnosed + dt.timedelta(days=rng.randint(200, 1500)) if rng.random() < 0.6 else None
    transplanted = (
        diagnosed + dt.timedelta(days=rng.randint(100, 700)) if rng.random() < 0.4 else None
    )
    past = [None if d is None or d > CUTOFF else d for d in (infused, transplanted)]
    return diagnosis, diagnosed, past[0], past[1]


def make_persons(count: int, *, centres: int = 10, seed: int = 7) -> tuple[list[Person], Truth]:
    """``count`` persons (twins and look-alikes included in the count)."""
    rng = random.Random(seed)
    truth = Truth()
    persons: list[Person] = []
    sizes = _centre_sizes(centres)
    used_insurance: set[str] = set()

    def insurance() -> str:
        while True:
            number = rng.choice("ABCDEFGHKLMNRSTVWXYZ") + f"{rng.randrange(10**9):09d}"
            if number not in used_insurance:
                used_insurance.add(number)
                return number

    def where() -> list[int]:
        how_many = rng.choices([1, 2, 3], [0.8, 0.13, 0.07])[0]
        chosen: list[int] = []
        while len(chosen) < how_many:
            c = rng.choices(range(centres), sizes)[0]
            if c not in chosen:
                chosen.append(c)
        return chosen

    def new_person(tradition: int | None = None) -> Person:
        tradition = (
            rng.choices(range(len(_TRADITIONS)), _TRADITION_SHARE)[0]
            if tradition is None
            else tradition
        )
        sex = rng.choice(["female", "male"])
        given, family = _name(rng, tradition, sex)
        birth_name = None
        if rng.random() < 0.04:  # the family name changed (adoption, parents' marriage)
            birth_name = family
            family = _name(rng, rng.choices(range(len(_TRADITIONS)), _TRADITION_SHARE)[0], sex)[1]
            if rng.random() < 0.4:
                family = f"{family}-{birth_name}"
        born = dt.date(1998, 1, 1) + dt.timedelta(days=rng.randrange(24 * 365))
        clinical = _clinical(rng, born)
        return Person(
            len(persons),
            sex,
            given,
            family,
            birth_name,
            born,
            insurance(),
            *clinical,
            centres=where(),
            tradition=tradition,
        )

    while len(persons) < count:
        person = new_person()
        persons.append(person)
        roll = rng.random()
        if roll < 0.0075 and len(persons) < count:  # a twin pair: 1.5 % of persons
            sex = person.sex if rng.random() < 0.5 else rng.choice(["female", "male"])
            given = person.given
            while given == person.given:
                given = _name(rng, person.tradition, sex)[0]
            diagnosed = person.diagnosed + dt.timedelta(days=rng.randint(-400, 400))
            if rng.random() < 0.05:
                diagnosed = person.diagnosed + dt.timedelta(days=rng.randint(-20, 20))
            diagnosed = max(diagnosed, person.born + dt.timedelta(days=30))
            _, diagnosed, infused, transplanted = _clinical(rng, person.born, diagnosed)
            centres_ = list(person.centres) if rng.random() < 0.7 else where()
            twin = Person(
                len(persons),
                sex,
                given,
                person.family,
                person.birth_name,
                person.born,
                insurance(),
                person.diagnosis,
                diagnosed,
                infused,
                transplanted,
                centres_,
                twin=person.id,
                tradition=person.tradition,
            )
            person.twin = twin.id
            persons.append(twin)
            truth.twins.append((person.id, twin.id))
        elif roll < 0.0175 and len(persons) < count:  # a planted look-alike: 1 %
            other = new_person(person.tradition)
            other.sex, other.given, other.family = person.sex, person.given, person.family
            if rng.random() < 0.5:
                day = rng.randint(1, 28)
                other.born = person.born.replace(day=day if day != person.born.day else 28)
            else:
                other.born = person.born.replace(year=person.born.year - rng.choice([1, 2]))
            other.diagnosis, other.diagnosed, other.infused, other.transplanted = _clinical(
                rng, other.born
            )
            persons.append(other)
            truth.lookalikes.append((person.id, other.id))
    return persons, truth


# -- layouts -------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """How one centre writes its file."""

    name: str
    format: str  # csv | xlsx
    columns: dict[str, str]  # field -> header (no header: the centre does not record it)
    date_format: str  # strftime, as written; for xlsx "cell": real date cells
    sex: dict[str, str]  # female / male -> the centre's code
    delimiter: str = ","
    encoding: str = "utf-8"
    capitals: float = 0.0  # share of family names written in capitals
    fold: float = 0.2  # share of names written without accents (ASCII)
    german: float = 0.0  # share of names with ue for ü (instead of plain folding)
    birth_month_only: bool = False
    diagnosis: dict[str, str] = field(
        default_factory=lambda: {"B-ALL": "B-ALL", "T-ALL": "T-ALL", "AML": "AML"}
    )
    insurance_style: str = "plain"  # plain | spaced | dashed | lower


_FIELDS = [
    *("id", "sex", "born", "given", "family", "birth_name", "insurance"),
    *("diagnosis", "diagnosed", "infused", "transplanted"),
]


def _columns(*headers: str | None) -> dict[str, str]:
    return {f: h for f, h in zip(_FIELDS, headers, strict=True) if h is not None}


LAYOUTS: list[Layout] = [
    Layout(
        "de-uniklinik",
        "csv",
        _columns(
            "Patienten-Nr",
            "Geschlecht",
            "Geburtsdatum",
            "Vorname",
            "Nachname",
            "Geburtsname",
            "Versichertennummer",
            "Diagnose",
            "Diagnosedatum",
            "CAR-T Infusion",
            "SZT Datum",
        ),
        "%d.%m.%Y",
        {"female": "w", "male": "m"},
        delimiter=";",
        encoding="cp1252",
        fold=0.1,
        german=0.3,
        diagnosis={"B-ALL": "B-ALL", "T-ALL": "T-ALL", "AML": "AML"},
    ),
    Layout(
        "uk-trust",
        "csv",
        _columns(
            "MRN",
            "Gender",
            "DOB",
            "Forename",
            "Surname",
            None,
            None,
            "Diagnosis",
            "Date of diagnosis",
            "CAR-T date",
            "BMT date",
        ),
        "%d/%m/%Y",
        {"female": "F", "male": "M"},
        fold=0.5,
        diagnosis={"B-ALL": "B-cell ALL", "T-ALL": "T-cell ALL", "AML": "AML"},
    ),
    Layout(
        "nl-centrum",
        "csv",
        _columns(
            "patientnummer",
            "geslacht",
            "geboortedatum",
            "voornaam",
            "achternaam",
            None,
            "bsn",
            "diagnose",
            "diagnosedatum",
            "infusiedatum",
            "transplantatie",
        ),
        "%d-%m-%Y",
        {"female": "vrouw", "male": "man"},
        delimiter=";",
        fold=0.3,
        insurance_style="spaced",
    ),
    Layout(
        "fr-chu",
        "csv",
        _columns(
            "IPP",
            "Sexe",
            "Date de naissance",
            "Prénom",
            "Nom",
            "Nom de naissance",
            "NIR",
            "Diagnostic",
            "Date du diagnostic",
            "Date CAR-T",
            "Date greffe",
        ),
        "%d/%m/%Y",
        {"female": "2", "male": "1"},
        delimiter=";",
        encoding="latin-1",
        capitals=0.9,
        fold=0.2,
        diagnosis={"B-ALL": "LAL-B", "T-ALL": "LAL-T", "AML": "LAM"},
    ),
    Layout(
        "us-xlsx",
        "xlsx",
        _columns(
            "Patient ID",
            "Gender",
            "Date of Birth",
            "First Name",
            "Last Name",
            None,
            None,
            "Dx",
            "Dx Date",
            "Infusion Date",
            "Transplant Date",
        ),
        "cell",
        {"female": "Female", "male": "Male"},
        fold=0.6,
    ),
    Layout(
        "es-hospital",
        "csv",
        _columns(
            "NHC",
            "Sexo",
            "Fecha nacimiento",
            "Nombre",
            "Apellidos",
            None,
            "CIP",
            "Diagnóstico",
            "Fecha diagnóstico",
            "Fecha CAR-T",
            "Fecha TPH",
        ),
        "%Y-%m-%d",
        {"female": "M", "male": "H"},
        fold=0.3,
        insurance_style="dashed",
        diagnosis={"B-ALL": "LLA-B", "T-ALL": "LLA-T", "AML": "LMA"},
    ),
    Layout(
        "tr-tab",
        "csv",
        _columns(
            "Hasta No",
            "Cinsiyet",
            "Doğum Tarihi",
            "Adı",
            "Soyadı",
            None,
            "Sigorta No",
            "Tanı",
            "Tanı Tarihi",
            "CAR-T Tarihi",
            "KIT Tarihi",
        ),
        "%d.%m.%Y",
        {"female": "K", "male": "E"},
        delimiter="\t",
        fold=0.5,
        insurance_style="lower",
    ),
    Layout(
        "pl-xlsx",
        "xlsx",
        _columns(
            "Nr pacjenta",
            "Płeć",
            "Data urodzenia",
            "Imię",
            "Nazwisko",
            "Nazwisko rodowe",
            "Nr ubezpieczenia",
            "Rozpoznanie",
            "Data rozpoznania",
            "Data CAR-T",
            "Data przeszczepu",
        ),
        "%Y-%m-%d",
        {"female": "K", "male": "M"},
        fold=0.2,
    ),
    Layout(
        "se-utf8bom",
        "csv",
        _columns(
            "Patient-id",
            "Kön",
            "Födelsedatum",
            "Förnamn",
            "Efternamn",
            None,
            None,
            "Diagnos",
            "Diagnosdatum",
            "CAR-T-datum",
            "SCT-datum",
        ),
        "%Y%m%d",
        {"female": "kvinna", "male": "man"},
        encoding="utf-8-sig",
        fold=0.3,
    ),
    Layout(
        "it-month",
        "csv",
        _columns(
            "Codice",
            "Sesso",
            "Mese di nascita",
            "Nome",
            "Cognome",
            None,
            None,
            "Diagnosi",
            "Data diagnosi",
            "Data CAR-T",
            "Data trapianto",
        ),
        "%d/%m/%Y",
        {"female": "F", "male": "M"},
        delimiter=";",
        encoding="cp1252",
        capitals=0.3,
        fold=0.4,
        birth_month_only=True,
        diagnosis={"B-ALL": "LLA-B", "T-ALL": "LLA-T", "AML": "LAM"},
    ),
]


# -- one centre's record of a person -------------------------------------------------


def _spelling(name: str, layout: Layout, rng: random.Random) -> str:
    if name in _VARIANT_OF and rng.random() < 0.5:
        name = rng.choice(_VARIANT_OF[name])
    roll = rng.random()
    if roll < layout.german:
        name = ascii_fold(name.translate(_GERMAN))
    elif roll < layout.german + layout.fold:
        name = ascii_fold(name)
    if rng.random() < 0.03:
        name = _typo(name, rng)
    return name


def _family_written(person: Person, layout: Layout, rng: random.Random) -> tuple[str, str]:
    """(family name, birth name) as the centre writes them."""
    family = person.family
    if person.birth_name is not None and rng.random() < 0.3:
        family = person.birth_name  # an older record, before the change
    words = family.split(" ")
    particles = {"van", "den", "der", "de", "von", "di", "lo", "d'"}
    if len(words) > 1 and words[0].lower() in particles:
        roll = rng.random()
        if roll < 0.25:
            family = " ".join(w for w in words if w.lower() not in particles)
        elif roll < 0.35:
            family = "".join(words).capitalize()
        elif roll < 0.45:
            family = (
                " ".join(w for w in words if w.lower() not in particles)
                + ", "
                + " ".join(w for w in words if w.lower() in particles)
            )
    elif (len(words) == 2 or "-" in family) and family[:3] not in (
        "Al-",
        "El-",
    ):  # double or hyphenated
        parts = family.replace("-", " ").split(" ")
        roll = rng.random()
        if roll < 0.35:
            family = parts[0]
        elif roll < 0.45:
            family = "-".join(parts) if " " in family else " ".join(parts)
        elif roll < 0.5:
            family = parts[-1]
    family = _spelling(family, layout, rng)
    if rng.random() < layout.capitals:
        family = family.upper()
    birth = ""
    if "birth_name" in layout.columns and person.birth_name is not None and rng.random() < 0.8:
        birth = _spelling(person.birth_name, layout, rng)
    return family, birth


def _given_written(person: Person, layout: Layout, rng: random.Random) -> str:
    given = person.given
    parts = given.replace("-", " ").split(" ")
    if len(parts) > 1 and rng.random() < 0.4:
        given = parts[0]
    return _spelling(given, layout, rng)


def _date(
    day: dt.date | None,
    rng: random.Random,
    *,
    off: float,
    typo: float,
    swap: float,
    shift: float,
    missing: float,
) -> dt.date | None:
    if day is None or rng.random() < missing:
        return None
    roll = rng.random()
    if roll < swap and day.day <= 12 and day.day != day.month:
        return day.replace(month=day.day, day=day.month)
    roll -= swap
    if roll < typo:  # one digit of the day, month or year
        for _ in range(5):
            part = rng.choice(["day", "month", "year"])
            try:
                if part == "day":
                    new = day.replace(day=(day.day // 10) * 10 + rng.randrange(10))
                elif part == "month":
                    new = day.replace(
                        month=rng.randint(1, 12) if day.month < 10 else 10 + rng.randrange(3)
                    )
                else:
                    new = day.replace(year=(day.year // 10) * 10 + rng.randrange(10))
            except ValueError:
                continue
            if new != day:
                return new
        return day
    roll -= typo
    if roll < shift:
        return day + dt.timedelta(days=rng.choice([-1, 1]) * rng.randint(1, int(off)))
    return day


def _insurance(number: str, layout: Layout, rng: random.Random) -> str:
    if rng.random() < 0.01:  # one digit typed wrong
        i = rng.randrange(1, len(number))
        number = number[:i] + str((int(number[i]) + rng.randint(1, 9)) % 10) + number[i + 1 :]
    if layout.insurance_style == "spaced":
        return f"{number[0]} {number[1:4]} {number[4:7]} {number[7:]}"
    if layout.insurance_style == "dashed":
        return f"{number[:4]}-{number[4:]}"
    if layout.insurance_style == "lower":
        return number.lower()
    return number


def _record(
    person: Person, layout: Layout, rng: random.Random, pid: str, insurance_of: str | None
) -> dict[str, Any]:
    row: dict[str, Any] = {"id": pid}
    sex = person.sex
    if rng.random() < 0.003:
        sex = "male" if sex == "female" else "female"
    row["sex"] = "" if rng.random() < 0.02 else layout.sex[sex]
    born = _date(person.born, rng, off=0, typo=0.015, swap=0.01, shift=0, missing=0.01)
    row["born"] = born
    row["given"] = "" if rng.random() < 0.01 else _given_written(person, layout, rng)
    family, birth = _family_written(person, layout, rng)
    row["family"] = "" if rng.random() < 0.005 else family
    row["birth_name"] = birth
    number = insurance_of or person.insurance
    row["insurance"] = "" if rng.random() < 0.3 else _insurance(number, layout, rng)
    row["diagnosis"] = layout.diagnosis[person.diagnosis]
    row["diagnosed"] = _date(
        person.diagnosed, rng, off=20, typo=0.02, swap=0.015, shift=0.04, missing=0.05
    )
    has = rng.random
    row["infused"] = (
        None
        if person.infused is None or has() > 0.8
        else _date(person.infused, rng, off=3, typo=0.01, swap=0.01, shift=0.02, missing=0.0)
    )
    row["transplanted"] = (
        None
        if person.transplanted is None or has() > 0.7
        else _date(person.transplanted, rng, off=5, typo=0.01, swap=0.01, shift=0.03, missing=0)
    )
    return row


def _cell(value: Any, field_: str, layout: Layout) -> Any:
    if isinstance(value, dt.date):
        if layout.format == "xlsx" and layout.date_format == "cell":
            return dt.datetime(value.year, value.month, value.day)
        if field_ == "born" and layout.birth_month_only:
            return value.strftime("%m/%Y")
        return value.strftime(layout.date_format)
    return "" if value is None else value


def _encodable(text: str, encoding: str) -> str:
    """What the centre's encoding can hold (a letter it cannot is folded)."""
    try:
        text.encode(encoding)
        return text
    except UnicodeEncodeError:
        return "".join(c if _fits(c, encoding) else ascii_fold(c) for c in text)


def _fits(char: str, encoding: str) -> bool:
    try:
        char.encode(encoding)
        return True
    except UnicodeEncodeError:
        return False


# -- writing -------------------------------------------------------------------------


def _mapping(centre: str, layout: Layout) -> str:
    c = layout.columns
    formats = [layout.date_format] if layout.date_format != "cell" else ["%Y-%m-%d"]
    if layout.birth_month_only:
        formats.append("%m/%Y")
    attrs = {
        "insurance": ("national_id", "Insurance number (shared identifier)"),
        "given": ("given_name", "Given name"),
        "family": ("family_name", "Family name"),
        "birth_name": ("birth_name", "Birth name"),
    }
    lines = [
        f"# SYNTHETIC centre {centre}, layout {layout.name} (benchmarks/registry_truth.py)",
        f"centre: {centre}",
        f"date_formats: {_yaml_list(formats)}",
    ]
    if layout.format == "csv":
        lines.append(f"csv_delimiter: {_q(layout.delimiter)}")
        lines.append(f"encoding: {layout.encoding}")
    lines.append("patient_attributes:")
    for f, (key, label) in attrs.items():
        if f in c:
            lines.append(f"  {key}: {{label: {label}, type: text}}")
    patient_cols = {"study_id": c["id"], "sex": c["sex"], "birth_date": c["born"]}
    patient_cols |= {attrs[f][0]: c[f] for f in attrs if f in c}
    lines.append("patients:")
    lines.append(f"  columns: {_yaml_map(patient_cols)}")
    sex = {v: k for k, v in layout.sex.items()}
    lines.append(f"  values: {{sex: {_yaml_map(sex)}}}")
    codes = {"B-ALL": "b_all", "T-ALL": "t_all", "AML": "aml"}
    words = {layout.diagnosis[k]: v for k, v in codes.items()}
    lines += [
        "events:",
        "  - name: diagnosis",
        "    concept: diagnosis",
        f"    columns: {_yaml_map({'value': c['diagnosis'], 'when_date': c['diagnosed']})}",
        f"    values: {{value: {_yaml_map(words)}}}",
        "  - name: cart_infusion",
        "    concept: cart_infusion",
        f"    columns: {_yaml_map({'when_date': c['infused']})}",
        "  - name: hsct",
        "    concept: hsct",
        f"    columns: {_yaml_map({'when_date': c['transplanted']})}",
    ]
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t") + '"'


def _yaml_map(values: dict[str, str]) -> str:
    return "{" + ", ".join(f"{_q(k)}: {_q(v)}" for k, v in values.items()) + "}"


def _yaml_list(values: list[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def write_centres(
    persons: list[Person],
    truth: Truth,
    folder: Path,
    *,
    seed: int = 7,
    centres: int = 10,
    names: tuple[str, ...] = ("given_name", "family_name", "birth_name"),
) -> Truth:
    """Every centre's file and mapping in ``folder``, and ``folder/registry.yaml``; the
    truth filled with (centre, patient id) -> person and the mix-ups."""
    rng = random.Random(seed * 7919 + 1)
    ids = [f"c{n:02}" for n in range(centres)]
    rows: dict[int, list[dict[str, Any]]] = {n: [] for n in range(centres)}
    by_id = {p.id: p for p in persons}
    mixup_pairs = {pair for pair in truth.twins if rng.random() < 0.25}
    mixed_at: dict[int, int] = {}  # person -> the centre whose record holds the co-twin's
    for a, b in sorted(mixup_pairs):
        wrong = a if rng.random() < 0.5 else b
        mixed_at[wrong] = rng.choice(by_id[wrong].centres)
    for person in persons:
        for centre in person.centres:
            layout = LAYOUTS[centre % len(LAYOUTS)]
            pid = f"{ids[centre].upper()}-{rng.randrange(10**7):07d}"
            while (ids[centre], pid) in truth.person_of:
                pid = f"{ids[centre].upper()}-{rng.randrange(10**7):07d}"
            other = None
            if mixed_at.get(person.id) == centre and person.twin is not None:
                other = by_id[person.twin].insurance
                truth.mixups.append((ids[centre], pid, person.twin))
            rows[centre].append(_record(person, layout, rng, pid, other))
            truth.person_of[(ids[centre], pid)] = person.id
    (folder / "mappings").mkdir(parents=True, exist_ok=True)
    entries = []
    for centre in range(centres):
        layout = LAYOUTS[centre % len(LAYOUTS)]
        rng.shuffle(rows[centre])
        name = ids[centre]
        data = folder / f"{name}.{layout.format}"
        headers = [layout.columns[f] for f in _FIELDS if f in layout.columns]
        table = [
            [_cell(row[f], f, layout) for f in _FIELDS if f in layout.columns]
            for row in rows[centre]
        ]
        if layout.format == "csv":
            with data.open("w", newline="", encoding=layout.encoding) as stream:
                writer = csv.writer(stream, delimiter=layout.delimiter)
                writer.writerow(headers)
                for values in table:
                    writer.writerow([_encodable(str(v), layout.encoding) for v in values])
        else:
            _write_xlsx(data, headers, table)
        (folder / "mappings" / f"{name}.yaml").write_text(_mapping(name, layout))
        entries.append(f"  - {{id: {name}, mapping: mappings/{name}.yaml, data: {data.name}}}")
    (folder / "registry.yaml").write_text(
        "name: Independent truth registry (SYNTHETIC)\nid: truth\ncentres:\n"
        + "\n".join(entries)
        + "\nlinkage:\n  identifiers: [national_id]\n"
        + f"  names: [{', '.join(names)}]\n"
        + "  review: 0.5\n"
        + "outputs:\n  formats: [parquet]\n"
    )
    return truth


def _write_xlsx(path: Path, headers: list[str], table: list[list[Any]]) -> None:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("Patienten")
    sheet.append(headers)
    for values in table:
        sheet.append(values)
    book.save(path)


def describe(persons: list[Person], truth: Truth) -> dict[str, Any]:
    """Counts of what was generated (for the results file)."""
    centres = [len(p.centres) for p in persons]
    return {
        "persons": len(persons),
        "records": len(truth.person_of),
        "persons_at_2_or_3_centres": round(sum(c > 1 for c in centres) / len(persons), 3),
        "twin_pairs": len(truth.twins),
        "identifier_mixups": len(truth.mixups),
        "planted_lookalike_pairs": len(truth.lookalikes),
        "name_changes": sum(p.birth_name is not None for p in persons),
        "true_pairs": sum(math.comb(c, 2) for c in centres),
    }
