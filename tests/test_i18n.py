"""Languages: complete catalogs, compiled on demand, and every cancel-flow page and message in
every shipped locale rendered without a single missing translation."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from recovery import i18n
from recovery.adapters.clock import FrozenClock
from recovery.web import i18n as web_i18n
from recovery.worker import Worker
from tests.support.cancel_flow import Flow, emails, make_flow
from tests.support.cancel_pages import expired_path, prepare_pages

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "recovery" / "translations"
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]")
FIX = (
    "run `pybabel extract -F recovery/translations/babel.cfg -o recovery/translations/messages.pot"
    " --no-location --omit-header --sort-output .` and `pybabel update -i "
    "recovery/translations/messages.pot -d recovery/translations --no-location`, then translate"
    " the new messages in every locale"
)


def extracted() -> set[str]:
    """Every message the sources (babel.cfg) use right now."""
    with (TRANSLATIONS / "babel.cfg").open() as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def catalog(locale: str) -> Any:
    with (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        return read_po(fh, locale=locale)


def test_the_template_lists_every_message_in_use() -> None:
    with (TRANSLATIONS / "messages.pot").open("rb") as fh:
        pot = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(fh) if m.id}
    assert extracted() == pot, FIX


@pytest.mark.parametrize("locale", i18n.SUPPORTED_LOCALES)
def test_every_message_is_translated(locale: str) -> None:
    messages = {(m.id if isinstance(m.id, str) else m.id[0]): m for m in catalog(locale) if m.id}
    missing = sorted(extracted() - set(messages))
    assert not missing, f"{locale} lacks {missing[:3]}...: {FIX}"
    plurals = catalog(locale).num_plurals
    for msgid, message in messages.items():
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(forms), f"{locale}: {msgid!r} is untranslated"
        assert not message.fuzzy, f"{locale}: {msgid!r} is fuzzy"
        if isinstance(message.id, tuple):
            assert len(forms) == plurals, f"{locale}: {msgid!r} needs {plurals} plural forms"
        wanted = set(PLACEHOLDER.findall(msgid))
        for form in forms:
            got = set(PLACEHOLDER.findall(form))
            # A plural form may leave out %(num)d (e.g. "next month" for one).
            assert got == wanted or got == wanted - {"%(num)d"}, f"{locale}: {msgid!r}"


def test_catalogs_compile_once_and_again_only_when_changed(tmp_path: Path) -> None:
    source = tmp_path / "translations"
    shutil.copytree(TRANSLATIONS, source, ignore=shutil.ignore_patterns("*.mo"))
    i18n.compile_catalogs(source)
    mo = source / "de" / "LC_MESSAGES" / "messages.mo"
    first = mo.stat().st_mtime_ns
    i18n.compile_catalogs(source)
    assert mo.stat().st_mtime_ns == first  # unchanged bytes: not rewritten
    po = source / "de" / "LC_MESSAGES" / "messages.po"
    po.write_text(po.read_text().replace('msgstr "Weiter"', 'msgstr "Weiter geht es"'))
    i18n.compile_catalogs(source)
    assert b"Weiter geht es" in mo.read_bytes()
    elsewhere = tmp_path / "compiled"
    i18n.compile_catalogs(source, elsewhere)  # a read-only install compiles to a temp dir
    assert (elsewhere / "th" / "LC_MESSAGES" / "messages.mo").exists()


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        (["de-AT", "en"], "de"),
        (["pt-PT"], "pt_BR"),
        (["pt_BR"], "pt_BR"),
        (["zh-CN", "fr-CA"], "fr"),
        ([None, "", "xx", "th-TH"], "th"),
        (["ja", "ko"], None),
        (["hi-IN"], "hi"),
        (["RU"], "ru"),
        (["es-419"], "es"),
    ],
)
def test_negotiate(candidates: list[str | None], expected: str | None) -> None:
    assert i18n.negotiate(candidates) == expected


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "expected"),
    [
        (2000, "usd", "en", "$20.00"),
        (2000, "eur", "de", "20,00\xa0€"),
        (2000, "eur", "fr", "20,00\xa0€"),
        (500, "jpy", "en", "¥500"),
        (1234, "kwd", "en", "KWD1.234"),  # three decimals
        (199900, "inr", "hi", "₹1,999.00"),
        (2000, "brl", "pt_BR", "R$\xa020,00"),
    ],
)
def test_money_per_locale(amount: int, currency: str, locale: str, expected: str) -> None:
    assert i18n.format_money(amount, currency, locale) == expected


def test_dates_per_locale() -> None:
    day = datetime(2026, 12, 2, 23, 30, tzinfo=UTC)
    assert i18n.format_day(day, "en") == "December 2, 2026"
    assert i18n.format_day(day, "de") == "2. Dezember 2026"
    # Without the trailing "г.", which doubled a sentence's period ("г..").
    assert i18n.format_day(day, "ru") == "2 декабря 2026"


@pytest.fixture
def flow(sqlite_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any) -> Iterator[Flow]:
    made = make_flow(sqlite_url, tmp_path, clock, fake_gateway)
    yield made
    made.runtime.db.dispose()


@pytest.mark.parametrize("locale", i18n.SUPPORTED_LOCALES)
def test_every_page_and_message_in_every_locale_is_fully_translated(
    flow: Flow, locale: str
) -> None:
    i18n.MISSING.seen.clear()
    client = flow.client
    lang = f'<html lang="{i18n.html_lang(locale)}"'
    english = locale == "en"
    for page in prepare_pages(flow, locale):
        response = client.get(page.url)
        html = response.get_data(as_text=True)
        assert response.status_code == page.status, (page.name, html[-600:])
        assert lang in html, page.name
        assert (page.expect in html) is english, f"{locale} {page.name}"
    notices = [
        (expired_path(flow, locale), 410),
        ("/cancel/" + "Z" * 43, 403),
    ]
    for url, status in notices:
        response = client.get(url, headers={"Accept-Language": locale.replace("_", "-")})
        assert response.status_code == status
        assert lang in response.get_data(as_text=True)
    flow.clock.advance(pause_reminder_due())
    Worker(flow.runtime).run_until_idle()
    sent = {(m.template, m.locale, m.status) for m in emails(flow)}
    assert ("pause_ending", locale, "sent") in sent
    assert ("cancel_confirmation", locale, "sent") in sent
    assert web_i18n.missing(flow.app) == set()
    assert i18n.MISSING.seen == set()


def pause_reminder_due() -> Any:
    from datetime import timedelta

    return timedelta(days=60)  # a two-month pause, less three days, has come due


def test_a_missing_translation_is_caught_not_silently_english(flow: Flow) -> None:
    import flask_babel

    with flow.app.test_request_context("/", headers={"Accept-Language": "de"}):
        assert flask_babel.gettext("Continue") == "Weiter"
        assert flask_babel.gettext("Not in any catalog") == "Not in any catalog"
    assert ("de", "Not in any catalog") in web_i18n.missing(flow.app)
    i18n.MISSING.seen.clear()
    rendered = i18n.text_environment("th").from_string('{{ _("Also not there") }}').render()
    assert rendered == "Also not there" and ("th", "Also not there") in i18n.MISSING.seen
    i18n.MISSING.seen.clear()
