"""The hosted cancel flow a subscriber sees: survey -> at most one offer -> confirmation.

Views parse, call a service, render; the rules live in `recovery.domain` and the services.
Every page that can still change something carries "Cancel my subscription", which finishes the
cancellation in one POST. Forms carry a CSRF token, and every answer the same security headers
(`recovery.web.security`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from recovery import i18n
from recovery.domain.cancel_links import LinkError, verify_link
from recovery.domain.cancel_terms import CancelPlan
from recovery.domain.experiments import HOLDOUT
from recovery.domain.offer_terms import OfferTerms, pause_until
from recovery.domain.offers import OfferKind
from recovery.services.cancel import decisions
from recovery.services.cancel.flow import (
    BadInput,
    FlowError,
    Opened,
    SessionExpired,
    SessionInvalid,
    StartRequest,
    StripeUnavailable,
    flow_env,
    open_session,
    start_session,
    submit_survey,
)
from recovery.web import i18n as web_i18n
from recovery.web import runtime, security

log = logging.getLogger(__name__)
bp = Blueprint("cancel_flow", __name__, url_prefix="/cancel")
TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,100}$")
DECIDED = frozenset({"cancelled", *decisions.SAVED})


def _policy() -> str:
    # Forms may only post here; "keep my subscription" then redirects to the business's site,
    # which Chromium checks against form-action too.
    targets = ["'self'"]
    back = g.get("cancel_return_url")
    if back:
        parts = urlsplit(back)
        targets.append(f"{parts.scheme}://{parts.netloc}")
    return security.subscriber_csp(targets)


# The URL is the subscriber's key: never sent to another site.
security.protect(bp, csp=_policy, headers=security.SUBSCRIBER_HEADERS)


@dataclass
class Page:
    """What a template shows; built by `_page`."""

    token: str | None = None
    urls: dict[str, str] = field(default_factory=dict)
    session: Any = None
    price: dict[str, Any] | None = None
    plan: CancelPlan | None = None  # what cancelling now would do
    done_plan: CancelPlan | None = None  # what the session's cancellation did
    now: datetime | None = None
    unpaid_since: datetime | None = None
    resumes_at: datetime | None = None
    reasons: list[dict[str, Any]] = field(default_factory=list)
    selected: str | None = None
    text: str = ""
    max_chars: int = 5000
    problem: str | None = None
    cancel_at_period_end: bool = True
    period_end: datetime | None = None
    terms: OfferTerms | None = None
    reminder_days: int = 3
    pause_options: list[dict[str, Any]] = field(default_factory=list)
    email: str | None = None
    return_link: str = ""


def with_outcome(url: str, outcome: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "outcome"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("outcome", outcome)])))


def _token(token: str) -> str:
    if not TOKEN.match(token):
        raise SessionInvalid("malformed session token")
    return token


def _speak(opened: Opened | None) -> str:
    """The session's locale, else the customer's Stripe preferred_locales, else the browser's
    Accept-Language, else English."""
    candidates: list[str | None] = []
    if opened is not None:
        candidates = [opened.row.locale, *opened.preferred_locales]
    locale = (
        i18n.negotiate(candidates)
        or i18n.negotiate(web_i18n.accepted_languages())
        or i18n.DEFAULT_LOCALE
    )
    web_i18n.use_locale(locale)
    return locale


def _open(token: str) -> tuple[Opened, str]:
    opened = open_session(runtime(), _token(token))
    g.cancel_return_url = opened.row.return_url
    return opened, _speak(opened)


def _page(opened: Opened, **values: Any) -> Page:
    rt = runtime()
    rules = rt.rules.cancel_flow
    row, facts = opened.row, opened.facts
    token = str(request.view_args["token"]) if request.view_args else ""
    locale = web_i18n.current_locale()
    page = Page(
        token=token,
        urls={
            "start": url_for("cancel_flow.survey", token=token),
            "survey": url_for("cancel_flow.survey", token=token),
            "accept": url_for("cancel_flow.accept", token=token),
            "cancel": url_for("cancel_flow.cancel", token=token),
            "keep": url_for("cancel_flow.keep", token=token),
        },
        session=row,
        reasons=[
            {"id": r.id, "custom": r.custom_label(locale) if r.label else None}
            for r in rules.reasons
        ],
        selected=row.reason,
        text=row.reason_text or "",
        max_chars=rules.comment_max_chars,
        cancel_at_period_end=rules.cancel_at_period_end,
        period_end=facts.current_period_end if facts else None,
        email=opened.customer_email,
        return_link=with_outcome(row.return_url, row.outcome or "abandoned"),
        terms=OfferTerms.from_json(row.offer_terms) if row.offer_terms else None,
        reminder_days=rules.offers.get(OfferKind.PAUSE).reminder_days_before,
        plan=opened.plan,
        done_plan=CancelPlan.from_json(row.cancel_plan) if row.cancel_plan else None,
        now=opened.now,
        unpaid_since=opened.unpaid_since,
        resumes_at=opened.resumes_at,
    )
    if facts and facts.plans:
        page.price = {
            "amount": facts.amount_per_period,
            "currency": facts.currency,
            "cadence": facts.cadence,
        }
    if page.terms and page.terms.pause_months:
        now = rt.clock.now()
        page.pause_options = [
            {"months": n, "until": pause_until(now, n)} for n in page.terms.pause_months
        ]
    for name, value in values.items():
        setattr(page, name, value)
    return page


def _render(template: str, page: Page | None, status: int = 200, **extra: Any) -> Response:
    business = runtime().rules.business.name
    html = render_template(f"cancel_flow/{template}", page=page, business=business, **extra)
    return Response(html, status=status, mimetype="text/html")


# ---- starting from a signed link ----------------------------------------------------------------


@bp.get("/start")
def start_link() -> Any:
    rt = runtime()
    secret = flow_env(rt.settings).link_secret
    if not secret:
        raise SessionInvalid("signed links are not enabled (RECOVERY_CANCEL_LINK_SECRET)")
    rules = rt.rules.cancel_flow
    try:
        link = verify_link(
            secret,
            request.args.to_dict(),
            int(rt.clock.now().timestamp()),
            rules.link_max_age_minutes * 60,
        )
    except LinkError as exc:
        raise (SessionExpired if exc.expired else SessionInvalid)(str(exc)) from exc
    req = StartRequest(
        customer_id=link.customer,
        subscription_id=link.subscription,
        return_url=link.return_url,
        locale=link.locale if link.locale and len(link.locale) <= 20 else None,
        source="link",
    )
    _row, token = start_session(rt, req, link=link)
    return redirect(url_for("cancel_flow.survey", token=token), 303)


# ---- the flow -----------------------------------------------------------------------------------


def _where_to(opened: Opened, token: str) -> Any | None:
    if opened.row.outcome in DECIDED:
        return redirect(url_for("cancel_flow.done", token=token), 303)
    return None


def _holdout(opened: Opened) -> bool:
    row = opened.row
    return row.variant == HOLDOUT and row.offer_decided and row.survey_at is None


@bp.get("/<token>")
def survey(token: str) -> Any:
    opened, _locale = _open(token)
    if (next_page := _where_to(opened, token)) is not None:
        return next_page
    if opened.subscription_ended:
        page = _page(opened, period_end=opened.ends_at)
        page.return_link = with_outcome(opened.row.return_url, "cancelled")
        return _render("notice.html", page, kind="already")
    if _holdout(opened):  # an experiment's holdout: no survey, no offer, only the choice
        return redirect(url_for("cancel_flow.accept", token=token), 303)
    return _render("survey.html", _page(opened))


@bp.post("/<token>")
def survey_submit(token: str) -> Any:
    opened, _locale = _open(token)
    reason, text = request.form.get("reason") or None, request.form.get("text")
    try:
        submit_survey(runtime(), token, reason, text)
    except BadInput as exc:
        page = _page(opened, selected=reason, text=text or "", problem=exc.problem)
        return _render("survey.html", page, 422)
    return redirect(url_for("cancel_flow.accept", token=token), 303)


@bp.get("/<token>/offer")
def accept(token: str) -> Any:
    opened, _locale = _open(token)
    if (next_page := _where_to(opened, token)) is not None:
        return next_page
    if not opened.row.offer_decided:
        return redirect(url_for("cancel_flow.survey", token=token), 303)
    return _render("offer.html", _page(opened))


@bp.post("/<token>/offer")
def accept_submit(token: str) -> Any:
    opened, locale = _open(token)
    kind, months = request.form.get("offer", ""), request.form.get("months")
    try:
        decisions.accept_offer(runtime(), token, locale, kind, months)
    except BadInput as exc:
        return _render("offer.html", _page(opened, problem=exc.problem), 422)
    except decisions.OfferUnavailable:
        return _render("notice.html", _page(opened), 409, kind="unavailable")
    return redirect(url_for("cancel_flow.done", token=token), 303)


@bp.post("/<token>/cancel")
def cancel(token: str) -> Any:
    opened, locale = _open(token)
    reason, text = request.form.get("reason") or None, request.form.get("text")
    try:
        decisions.cancel(runtime(), token, locale, reason, text)
    except BadInput as exc:
        page = _page(opened, selected=reason, text=text or "", problem=exc.problem)
        return _render("survey.html", page, 422)
    return redirect(url_for("cancel_flow.done", token=token), 303)


@bp.post("/<token>/keep")
def keep(token: str) -> Any:
    opened, locale = _open(token)
    decided = decisions.keep(runtime(), token, locale)
    return redirect(with_outcome(opened.row.return_url, decided.outcome), 303)


@bp.get("/<token>/done")
def done(token: str) -> Any:
    opened, _locale = _open(token)
    if opened.row.outcome not in DECIDED:
        return redirect(url_for("cancel_flow.survey", token=token), 303)
    return _render("done.html", _page(opened))


# ---- errors: friendly pages, never a stack trace ------------------------------------------------


def _notice(kind: str, status: int) -> Response:
    if not g.get("recovery_locale"):
        _speak(None)
    page = None
    if request.view_args and isinstance(request.view_args.get("token"), str):
        token = request.view_args["token"]
        if TOKEN.match(token):
            page = Page(token=token, urls={"start": url_for("cancel_flow.survey", token=token)})
    return _render("notice.html", page, status, kind=kind)


@bp.errorhandler(SessionInvalid)
def invalid(exc: SessionInvalid) -> Response:
    log.info("cancel flow refused: %s", exc.message)
    return _notice("invalid", 403)


@bp.errorhandler(SessionExpired)
def expired(exc: SessionExpired) -> Response:
    return _notice("expired", 410)


@bp.errorhandler(security.CsrfFailed)
def csrf_failed(exc: security.CsrfFailed) -> Response:
    return _notice("retry", 400)


@bp.errorhandler(StripeUnavailable)
def stripe_unavailable(exc: StripeUnavailable) -> Response:
    return _notice("error", 503)


@bp.errorhandler(FlowError)
def flow_error(exc: FlowError) -> Response:
    log.info("cancel flow refused (%s): %s", exc.code, exc.message)
    return _notice("invalid" if exc.status in (403, 404) else "error", exc.status)


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    return _notice("error", exc.code or 400)


@bp.errorhandler(DBAPIError)
def database_down(exc: DBAPIError) -> Response:
    log.error("cancel flow: database unavailable: %s", exc.__class__.__name__)
    return _notice("error", 503)


@bp.errorhandler(Exception)
def unexpected(exc: Exception) -> Response:
    log.exception("cancel flow: unexpected error")
    return _notice("error", 500)


def init_app(app: Any) -> None:
    """Check the cancel flow's rules and settings at start-up: a typo fails here, naming the key."""
    rt = app.extensions["recovery"]
    rt.rules.cancel_flow  # noqa: B018 - parsing it is the check
    flow_env(rt.settings)
