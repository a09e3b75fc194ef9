"""A customer's likely time zone, from what Stripe knows about them.

Stripe gives us a country (address, or the card's issuing country) and ``preferred_locales``
(e.g. ``["de-DE", "en"]``) but no time zone. Retries aimed at a customer's morning only need the
right part of the day, so one representative IANA zone per country is enough.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["COUNTRY_ZONES", "customer_timezone"]

# One zone per country. For countries spanning several zones we take the one most customers
# live in, or the middle one where that keeps a morning window in the morning everywhere:
# 08:00-10:00 Chicago is 06:00-08:00 Los Angeles and 09:00-11:00 New York.
COUNTRY_ZONES: dict[str, str] = {
    "US": "America/Chicago",
    "CA": "America/Toronto",
    "MX": "America/Mexico_City",
    "BR": "America/Sao_Paulo",
    "AR": "America/Argentina/Buenos_Aires",
    "CL": "America/Santiago",
    "CO": "America/Bogota",
    "PE": "America/Lima",
    "GB": "Europe/London",
    "IE": "Europe/Dublin",
    "PT": "Europe/Lisbon",
    "ES": "Europe/Madrid",
    "FR": "Europe/Paris",
    "BE": "Europe/Brussels",
    "NL": "Europe/Amsterdam",
    "LU": "Europe/Luxembourg",
    "DE": "Europe/Berlin",
    "AT": "Europe/Vienna",
    "CH": "Europe/Zurich",
    "IT": "Europe/Rome",
    "DK": "Europe/Copenhagen",
    "NO": "Europe/Oslo",
    "SE": "Europe/Stockholm",
    "FI": "Europe/Helsinki",
    "PL": "Europe/Warsaw",
    "CZ": "Europe/Prague",
    "SK": "Europe/Bratislava",
    "HU": "Europe/Budapest",
    "RO": "Europe/Bucharest",
    "BG": "Europe/Sofia",
    "GR": "Europe/Athens",
    "HR": "Europe/Zagreb",
    "SI": "Europe/Ljubljana",
    "EE": "Europe/Tallinn",
    "LV": "Europe/Riga",
    "LT": "Europe/Vilnius",
    "CY": "Asia/Nicosia",
    "MT": "Europe/Malta",
    "UA": "Europe/Kyiv",
    "TR": "Europe/Istanbul",
    "RU": "Europe/Moscow",
    "IL": "Asia/Jerusalem",
    "AE": "Asia/Dubai",
    "SA": "Asia/Riyadh",
    "EG": "Africa/Cairo",
    "ZA": "Africa/Johannesburg",
    "NG": "Africa/Lagos",
    "KE": "Africa/Nairobi",
    "IN": "Asia/Kolkata",
    "PK": "Asia/Karachi",
    "SG": "Asia/Singapore",
    "MY": "Asia/Kuala_Lumpur",
    "TH": "Asia/Bangkok",
    "VN": "Asia/Ho_Chi_Minh",
    "ID": "Asia/Jakarta",
    "PH": "Asia/Manila",
    "HK": "Asia/Hong_Kong",
    "TW": "Asia/Taipei",
    "CN": "Asia/Shanghai",
    "KR": "Asia/Seoul",
    "JP": "Asia/Tokyo",
    "AU": "Australia/Sydney",
    "NZ": "Pacific/Auckland",
}

# BCP 47 region subtag: two letters after the language (and optional script), "de-DE",
# "zh-Hant-TW", "en_GB" (POSIX style). Numeric UN M.49 regions such as "es-419" are ignored.
_REGION = re.compile(r"^[a-z]{2,3}(?:[-_][a-z]{4})?[-_]([a-z]{2})(?:[-_.@]|$)", re.IGNORECASE)


def customer_timezone(country: str | None, locales: Sequence[str]) -> str:
    """The country's zone, else the first locale with a known region's zone, else ``"UTC"``."""
    if country:
        zone = COUNTRY_ZONES.get(country.strip().upper())
        if zone is not None:
            return zone
    for locale in locales:
        match = _REGION.match(locale.strip())
        if match:
            zone = COUNTRY_ZONES.get(match.group(1).upper())
            if zone is not None:
                return zone
    return "UTC"
