"""The web pages' languages: Flask-Babel over the same catalogs as `recovery.i18n`, with the
locale chosen per request (an explicit choice, else the browser's Accept-Language)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import flask_babel
from babel.support import Translations
from flask import Flask, g, has_request_context, request

from recovery.i18n import (
    DEFAULT_LOCALE,
    DOMAIN,
    MissingTranslations,
    Recorder,
    catalog_dir,
    filters,
    html_lang,
    negotiate,
)


class _CheckedDomain(flask_babel.Domain):  # type: ignore[misc]
    """Flask-Babel's domain with the recording fallback added to each catalog it loads."""

    def __init__(self, missing: MissingTranslations) -> None:
        super().__init__(domain=DOMAIN)
        self.missing = missing

    def get_translations(self) -> Any:
        locale = str(flask_babel.get_locale() or DEFAULT_LOCALE)
        fresh = (locale, DOMAIN) not in self.cache
        result = super().get_translations()
        if fresh and isinstance(result, Translations):
            result.add_fallback(Recorder(locale, self.missing))
        return result


class _Babel(flask_babel.Babel):  # type: ignore[misc]
    def __init__(self, missing: MissingTranslations) -> None:
        super().__init__()
        self.missing = missing

    @cached_property
    def domain_instance(self) -> _CheckedDomain:
        return _CheckedDomain(self.missing)


@dataclass
class I18nState:
    missing: MissingTranslations = field(default_factory=MissingTranslations)


def _select_locale() -> str:
    explicit = g.get("recovery_locale")
    if explicit:
        return str(explicit)
    accepted = [tag for tag, _q in request.accept_languages] if has_request_context() else []
    return negotiate(accepted) or DEFAULT_LOCALE


def current_locale() -> str:
    return str(flask_babel.get_locale() or DEFAULT_LOCALE)


def use_locale(locale: str) -> None:
    """Speak `locale` for the rest of this request (a shipped locale, see `negotiate`)."""
    g.recovery_locale = locale
    flask_babel.refresh()


def accepted_languages() -> list[str]:
    return [tag for tag, _q in request.accept_languages] if has_request_context() else []


def speak_customers_language(preferred_locales: Sequence[str]) -> None:
    """The customer's language (Stripe `preferred_locales`, as their emails), else the
    browser's, else English: every subscriber page behind a link speaks this way."""
    use_locale(negotiate([*preferred_locales, *accepted_languages()]) or DEFAULT_LOCALE)


def init_app(app: Flask) -> None:
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(catalog_dir())
    app.config["BABEL_DEFAULT_LOCALE"] = DEFAULT_LOCALE
    state = I18nState()
    app.extensions["recovery_i18n"] = state
    _Babel(state.missing).init_app(app, locale_selector=_select_locale)
    app.jinja_env.filters.update(filters(current_locale))
    app.jinja_env.globals["html_lang"] = lambda: html_lang(current_locale())


def missing(app: Flask) -> set[tuple[str, str]]:
    state: I18nState = app.extensions["recovery_i18n"]
    return set(state.missing.seen)
