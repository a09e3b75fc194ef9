"""Who the demo's customers are: names, countries, languages, phones, plans and cards.

Everything is drawn from one seeded `random.Random`, so a seed gives the same people every time.
Addresses are reserved example domains (RFC 2606) and phone numbers that reach nobody: the US
and Canadian ones are in the 555-01xx block set aside for fiction; the others are never sent
anywhere (the demo has no SMS provider: texts stay in the local outbox).
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass

# (country, Stripe preferred locales, currency, weight): the eight shipped languages; the Dutch
# list Dutch first, which is not shipped, so their pages and emails fall back to English.
COUNTRIES: tuple[tuple[str, str, str, int], ...] = (
    ("US", "en", "usd", 38),
    ("GB", "en", "usd", 8),
    ("CA", "en", "usd", 5),
    ("AU", "en", "usd", 4),
    ("DE", "de", "eur", 10),
    ("AT", "de", "eur", 2),
    ("FR", "fr", "eur", 7),
    ("ES", "es", "eur", 5),
    ("MX", "es", "usd", 4),
    ("BR", "pt-BR", "usd", 5),
    ("IN", "hi", "usd", 4),
    ("TH", "th", "usd", 2),
    ("EE", "ru", "eur", 2),
    ("NL", "nl,en", "eur", 2),
)

NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "en": (
        ("Olivia", "James", "Amelia", "Noah", "Grace", "Ethan", "Chloe", "Liam", "Maya", "Owen"),
        ("Smith", "Johnson", "Brown", "Taylor", "Wilson", "Clarke", "Walker", "Young", "Hughes"),
    ),
    "de": (
        ("Lena", "Jonas", "Mia", "Felix", "Hannah", "Lukas", "Emma", "Paul", "Klara", "Moritz"),
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Becker", "Hoffmann", "Koch"),
    ),
    "fr": (
        ("Camille", "Louis", "Chloé", "Hugo", "Léa", "Jules", "Manon", "Arthur", "Inès", "Théo"),
        ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand"),
    ),
    "es": (
        ("Lucía", "Mateo", "Sofía", "Hugo", "Martina", "Pablo", "Valeria", "Diego", "Elena"),
        ("García", "Fernández", "González", "Rodríguez", "López", "Martínez", "Sánchez"),
    ),
    "pt-BR": (
        ("Ana", "João", "Beatriz", "Pedro", "Larissa", "Gabriel", "Júlia", "Rafael", "Camila"),
        ("Silva", "Santos", "Oliveira", "Souza", "Costa", "Pereira", "Almeida", "Ferreira"),
    ),
    "hi": (
        ("Aarav", "Priya", "Vivaan", "Ananya", "Arjun", "Diya", "Rohan", "Isha", "Kabir"),
        ("Sharma", "Verma", "Patel", "Gupta", "Iyer", "Reddy", "Nair", "Mehta"),
    ),
    "th": (
        ("Somchai", "Nattaya", "Anan", "Kanya", "Prasert", "Malee", "Niran", "Siriporn"),
        ("Srisai", "Chaiyaporn", "Wongsa", "Boonmee", "Suksawat", "Thongdee"),
    ),
    "ru": (
        ("Anna", "Dmitri", "Olga", "Sergei", "Irina", "Nikolai", "Yelena", "Pavel", "Tatiana"),
        ("Ivanova", "Petrov", "Smirnova", "Kuznetsov", "Popova", "Sokolov", "Volkova"),
    ),
    "nl": (
        ("Sanne", "Daan", "Fleur", "Bram", "Lotte", "Sem", "Noor", "Thijs", "Eva"),
        ("de Jong", "Jansen", "de Vries", "van Dijk", "Bakker", "Visser", "Smit"),
    ),
}

# Country calling code and a mobile-shaped national number pattern (# = a random digit).
PHONES: dict[str, str] = {
    "US": "+120255501##",
    "CA": "+141655501##",
    "GB": "+447911######",
    "AU": "+614########",
    "DE": "+49151########",
    "AT": "+43664#######",
    "FR": "+336########",
    "ES": "+346########",
    "MX": "+5255########",
    "BR": "+55119########",
    "IN": "+9198########",
    "TH": "+668########",
    "EE": "+3725#######",
    "NL": "+316########",
}

EMAIL_DOMAINS = ("example.com", "example.org", "example.net")


@dataclass(frozen=True)
class Plan:
    price_id: str
    product: str
    amount: int  # minor units
    currency: str
    interval: str  # month | year


PLANS: tuple[Plan, ...] = (
    Plan("price_starter_monthly", "prod_starter", 900, "usd", "month"),
    Plan("price_pro_monthly", "prod_pro", 2900, "usd", "month"),
    Plan("price_team_monthly", "prod_team", 9900, "usd", "month"),
    Plan("price_starter_yearly", "prod_starter", 9000, "usd", "year"),
    Plan("price_pro_yearly", "prod_pro", 29000, "usd", "year"),
    Plan("price_starter_monthly_eur", "prod_starter", 900, "eur", "month"),
    Plan("price_pro_monthly_eur", "prod_pro", 2700, "eur", "month"),
    Plan("price_pro_yearly_eur", "prod_pro", 27000, "eur", "year"),
)
PLAN_WEIGHTS: dict[str, tuple[tuple[str, int], ...]] = {
    "usd": (
        ("price_starter_monthly", 35),
        ("price_pro_monthly", 38),
        ("price_team_monthly", 10),
        ("price_starter_yearly", 6),
        ("price_pro_yearly", 11),
    ),
    "eur": (
        ("price_starter_monthly_eur", 40),
        ("price_pro_monthly_eur", 45),
        ("price_pro_yearly_eur", 15),
    ),
}
COUPON_ID = "demo_25off_3m"

# The demo's business rules: the offers need price mappings and a coupon that exist in the
# fake, and a banner's cancel-flow session should still open after lunch.
RULES_TOML = f"""\
# Written by `recovery demo`: the shipped defaults plus the demo's prices and coupon.
[cancel_flow]
session_minutes = 1440

[offers.downgrade]
prices = [
  {{ from = "price_pro_monthly", to = "price_starter_monthly", to_unit_amount = 900 }},
  {{ from = "price_team_monthly", to = "price_pro_monthly", to_unit_amount = 2900 }},
  {{ from = "price_pro_monthly_eur", to = "price_starter_monthly_eur", to_unit_amount = 900 }},
]

[offers.longer_term]
prices = [
  {{ from = "price_starter_monthly", to = "price_starter_yearly", to_unit_amount = 9000 }},
  {{ from = "price_pro_monthly", to = "price_pro_yearly", to_unit_amount = 29000 }},
  {{ from = "price_pro_monthly_eur", to = "price_pro_yearly_eur", to_unit_amount = 27000 }},
]

[offers.discount]
coupon = "{COUPON_ID}"
percent_off = 25
duration_months = 3

# A dunning experiment, so the demo's Experiments page has one: a tenth of the customers are
# left to Stripe alone (the holdout), the rest routed between our policy and email only.
[[experiments]]
key = "demo-dunning"
applies_to = "dunning"
holdout = 0.10
routing = "thompson"
min_share = 0.20

[[experiments.arms]]
name = "smart"

[[experiments.arms]]
name = "email_only"
channels = ["email"]
"""

# Card brands by share of cards (roughly the US card mix), with their test last-four digits.
BRANDS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("visa", 52, ("4242", "1881", "0077", "3155", "5556")),
    ("mastercard", 30, ("4444", "5100", "8210", "0005")),
    ("amex", 12, ("8431", "0005")),
    ("discover", 6, ("1117", "9424")),
)


@dataclass(frozen=True)
class Person:
    name: str
    email: str
    country: str
    locale: str  # Stripe preferred_locales, comma-separated
    currency: str
    phone: str | None
    sms_consent: bool


@dataclass(frozen=True)
class CardSpec:
    brand: str
    last4: str
    funding: str
    exp_month: int
    exp_year: int
    country: str  # where the card was issued


def _weighted(rng: random.Random, pairs: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([p for p, _ in pairs], weights=[w for _, w in pairs])[0]


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return folded.lower().replace(" ", "")


def person(rng: random.Random, number: int) -> Person:
    country, locale, currency, _ = rng.choices(COUNTRIES, weights=[c[3] for c in COUNTRIES])[0]
    first_names, last_names = NAMES[locale.split(",")[0]]
    first, last = rng.choice(first_names), rng.choice(last_names)
    email = f"{_ascii(first)}.{_ascii(last)}{number}@{rng.choice(EMAIL_DOMAINS)}"
    phone = None
    if rng.random() < 0.6:
        phone = "".join(str(rng.randrange(10)) if c == "#" else c for c in PHONES[country])
    return Person(
        name=f"{first} {last}",
        email=email,
        country=country,
        locale=locale,
        currency=currency,
        phone=phone,
        sms_consent=phone is not None and rng.random() < 0.55,
    )


def plan_for(rng: random.Random, currency: str) -> Plan:
    price_id = _weighted(rng, PLAN_WEIGHTS[currency])
    return next(p for p in PLANS if p.price_id == price_id)


def card(rng: random.Random, year: int, month: int, country: str) -> CardSpec:
    """A card issued in `country`, valid at (year, month), expiring within about four years."""
    brand = _weighted(rng, tuple((b, w) for b, w, _ in BRANDS))
    last4 = rng.choice(next(digits for b, _, digits in BRANDS if b == brand))
    months_left = rng.randrange(0, 48)
    exp_year, exp_month0 = divmod(year * 12 + month - 1 + months_left, 12)
    funding = "debit" if rng.random() < 0.4 and brand in ("visa", "mastercard") else "credit"
    return CardSpec(brand, last4, funding, exp_month0 + 1, exp_year, country)
