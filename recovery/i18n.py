"""Languages for everything a subscriber reads: web pages (Flask-Babel) and messages rendered
outside a request, e.g. by the worker (`render_message`). The web pages' side (Flask-Babel, the
request's locale) is `recovery.web.i18n`.

One set of gettext catalogs serves both: `recovery/translations/<locale>/LC_MESSAGES/messages.po`
(extracted with `recovery/translations/babel.cfg`). The `.po` files are the source; the `.mo`
files are compiled from them on first use in each process - at app start and before the first
message the worker renders - and rewritten only when their bytes would change, so a fresh clone,
CI and a deploy never run on stale or missing catalogs and nobody commits a binary. Where the
package directory is read-only, they are compiled into a private temporary directory instead.

Locale choice is the caller's (`negotiate` turns candidates - an explicit choice, a customer's
Stripe `preferred_locales`, the browser's Accept-Language - into a shipped locale); dates and
money are formatted per locale with Babel (`format_day`, `format_money`).

A message missing from a catalog falls back to English and is recorded (`missing`), logged once:
tests assert that rendering every page in every locale records nothing.
"""

from __future__ import annotations

import functools
import gettext
import io
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_percent
from babel.support import Translations

from recovery.resources import TEMPLATES

log = logging.getLogger(__name__)

TRANSLATIONS_DIR = Path(__file__).resolve().with_name("translations")
TEMPLATES_DIR = TEMPLATES
DOMAIN = "messages"
DEFAULT_LOCALE = "en"
SUPPORTED_LOCALES = ("en", "es", "de", "fr", "pt_BR", "hi", "th", "ru")

# Stripe amounts are in the currency's smallest unit; these currencies have none below the unit
# and these have three decimals. https://docs.stripe.com/currencies#zero-decimal
ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])


# ---- catalogs -----------------------------------------------------------------------------------


def compile_catalogs(source: Path = TRANSLATIONS_DIR, target: Path | None = None) -> Path:
    """Compile every `<locale>/LC_MESSAGES/messages.po` under `source` into `.mo` files under
    `target` (default: beside them), writing only what changed. Returns the `.mo` directory."""
    target = target or source
    for po_path in sorted(source.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        locale = po_path.parent.parent.name
        with po_path.open("rb") as fh:
            catalog = read_po(fh, locale=locale, domain=DOMAIN)
        buffer = io.BytesIO()
        write_mo(buffer, catalog, use_fuzzy=False)
        compiled = buffer.getvalue()
        mo_path = target / locale / "LC_MESSAGES" / f"{DOMAIN}.mo"
        if mo_path.exists() and mo_path.read_bytes() == compiled:
            continue
        mo_path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a process reading the catalog never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=mo_path.parent, prefix=".messages-", suffix=".mo")
        with os.fdopen(fd, "wb") as out:
            out.write(compiled)
        os.replace(tmp, mo_path)
    return target


_compile_lock = threading.Lock()


@lru_cache(maxsize=1)
def catalog_dir() -> Path:
    """Where this process reads compiled catalogs from (compiling them once per process)."""
    with _compile_lock:
        try:
            return compile_catalogs()
        except OSError as exc:  # a read-only install
            fallback = Path(tempfile.mkdtemp(prefix="recovery-translations-"))
            log.info("translations compiled into %s (%s)", fallback, exc.__class__.__name__)
            return compile_catalogs(TRANSLATIONS_DIR, fallback)


@dataclass
class MissingTranslations:
    """Messages looked up but absent from a catalog, as (locale, msgid)."""

    seen: set[tuple[str, str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, locale: str, message: str) -> None:
        with self.lock:
            if (locale, message) in self.seen:
                return
            self.seen.add((locale, message))
        log.warning("missing %s translation: %r", locale, message)


# Messages rendered outside Flask (worker) record here.
MISSING = MissingTranslations()


class Recorder(gettext.NullTranslations):
    """The last fallback of a catalog: records the miss and answers in English."""

    def __init__(self, locale: str, missing: MissingTranslations) -> None:
        super().__init__()
        self.locale, self.missing = locale, missing

    def gettext(self, message: str) -> str:
        self.missing.record(self.locale, message)
        return message

    def ngettext(self, msgid1: str, msgid2: str, n: int) -> str:
        self.missing.record(self.locale, msgid1)
        return msgid1 if n == 1 else msgid2


@lru_cache(maxsize=32)
def translations(locale: str) -> Translations:
    """The catalog for a shipped locale, read from `catalog_dir()`, with a recording fallback."""
    loaded = Translations.load(str(catalog_dir()), [locale], DOMAIN)
    result = loaded if isinstance(loaded, Translations) else Translations()
    result.add_fallback(Recorder(locale, MISSING))
    return result


# ---- locale negotiation -------------------------------------------------------------------------


def _parse(tag: str) -> Locale | None:
    tag = tag.strip().replace("-", "_")
    if not tag or len(tag) > 35:
        return None
    try:
        return Locale.parse(tag)
    except (ValueError, TypeError, UnknownLocaleError):
        return None


def negotiate(candidates: Iterable[str | None]) -> str | None:
    """The first candidate we ship, matched exactly or by language: `pt-PT`, `pt` -> `pt_BR`,
    `de-AT` -> `de`; None when nothing fits."""
    for candidate in candidates:
        parsed = _parse(candidate or "")
        if parsed is None:
            continue
        exact = f"{parsed.language}_{parsed.territory}" if parsed.territory else parsed.language
        if exact in SUPPORTED_LOCALES:
            return exact
        for supported in SUPPORTED_LOCALES:
            if supported.split("_")[0] == parsed.language:
                return supported
    return None


def html_lang(locale: str) -> str:
    """BCP 47 for `<html lang>`: pt_BR -> pt-BR."""
    return locale.replace("_", "-")


# ---- formatting ---------------------------------------------------------------------------------


def major_units(amount: int, currency: str) -> Decimal:
    code = currency.lower()
    exponent = 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2
    return Decimal(amount).scaleb(-exponent)


# Remembered: a business has few prices and a run of reminders few dates, and Babel's
# formatting was 2 % of a worker's CPU (py-spy, bench/worker_throughput.py: each thank-you note).
@functools.lru_cache(maxsize=4096)
def format_money(amount: int, currency: str, locale: str) -> str:
    return format_currency(major_units(amount, currency), currency.upper(), locale=locale)


def format_day(when: datetime, locale: str) -> str:
    # UTC calendar date; the customer's time zone is not known here.
    return _format_day(when.date(), locale)


@functools.lru_cache(maxsize=4096)
def _format_day(day: date, locale: str) -> str:
    text = format_date(day, format="long", locale=locale)
    # Russian's long date ends in an abbreviation ("4 декабря 2026 г."), which doubled the
    # period of every sentence ending in a date ("г.."); the date reads as well without it.
    return _ABBREVIATION_AT_END.sub("", text) if text.endswith(".") else text


_ABBREVIATION_AT_END = re.compile(r"[\s\u202f\xa0]+[^\s\u202f\xa0\d]+\.$")


def format_share(percent: float, locale: str) -> str:
    return format_percent(Decimal(str(percent)) / 100, locale=locale)


def filters(locale_of: Callable[[], str]) -> dict[str, Callable[..., str]]:
    return {
        "money": lambda amount, currency: format_money(int(amount), str(currency), locale_of()),
        "day": lambda when: format_day(when, locale_of()),
        "share": lambda percent: format_share(float(percent), locale_of()),
    }


# ---- messages rendered outside a request --------------------------------------------------------


@dataclass(frozen=True)
class Message:
    subject: str
    body: str


class _SharedCompiledTemplates(jinja2.BytecodeCache):
    """Compiled text templates shared by the locales' environments. Each locale has its own
    environment (its gettext), but the same settings, so a template compiles to the same code in
    each: without this every locale parsed and compiled every template again (eight times)."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)  # resets itself if the source's checksum changed

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


_TEXT_TEMPLATES_CODE = _SharedCompiledTemplates()


@lru_cache(maxsize=len(SUPPORTED_LOCALES))
def text_environment(locale: str) -> jinja2.Environment:
    """A plain-text Jinja environment (no HTML escaping) speaking `locale`."""
    # Plain text (email bodies, SMS), never served as HTML: escaping would corrupt "&" and quotes.
    env = jinja2.Environment(  # nosec B701
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        extensions=["jinja2.ext.i18n"],
        autoescape=False,  # nosec B701 - plain-text mail and SMS: nothing is rendered as HTML
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        bytecode_cache=_TEXT_TEMPLATES_CODE,
    )
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    env.filters.update(filters(lambda: locale))
    env.globals["locale"] = locale
    return env


def render_message(template: str, locale: str, **context: Any) -> Message:
    """Render a text template whose first line is `Subject: ...`, then a blank line, then the
    body. Unknown locales render in English."""
    chosen = negotiate([locale]) or DEFAULT_LOCALE
    text = text_environment(chosen).get_template(template).render(**context)
    head, _, body = text.partition("\n\n")
    if not head.startswith("Subject: "):
        raise ValueError(f"{template} must start with a 'Subject: ' line and a blank line")
    return Message(subject=head.removeprefix("Subject: ").strip(), body=body.strip() + "\n")
