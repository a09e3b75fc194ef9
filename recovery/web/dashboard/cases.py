"""/dashboard/cases: the case list (and its CSV), a case's page and its admin actions.

Views parse, call a service, render. Actions are POSTs (CSRF-checked before any view runs),
for admins only, and answer with a redirect back to the case page and a one-line notice.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from flask import Response, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from recovery.services.cases import admin as case_admin
from recovery.services.cases import desk
from recovery.services.reporting import account_outreach, case_list, exports
from recovery.services.reporting.case_list import mask_email
from recovery.web import runtime
from recovery.web.dashboard import labels
from recovery.web.dashboard.auth import admin_required, current_user, login_required
from recovery.web.dashboard.blueprint import bp
from recovery.web.dashboard.csv_export import case_csv, csv_response
from recovery.web.dashboard.forms import CLOSE_REASONS, ActionForm, CloseForm
from recovery.web.dashboard.guards import error_page, full_emails


def _filters() -> case_list.CaseFilters:
    return case_list.parse_filters(request.args)


@bp.get("/dashboard/cases")
@login_required
def cases() -> Response | str:
    rt = runtime()
    try:
        filters = _filters()
        after = case_list.decode_cursor(request.args.get("after"))
    except case_list.BadFilter as exc:
        return error_page(400, str(exc))
    page = case_list.page(rt, filters, after)
    return render_template(
        "dashboard/cases.html",
        page=page,
        filters=filters,
        args=filters.query_args(),
        first_page=after is None,
        statuses=case_list.STATUS_LABELS,
        categories=case_list.CATEGORIES,
        full_emails=full_emails(),
    )


@bp.get("/dashboard/cases.csv")
@login_required
def cases_csv() -> Response:
    rt = runtime()
    try:
        filters = _filters()
    except case_list.BadFilter as exc:
        return error_page(400, str(exc))
    now = rt.clock.now()
    user = current_user()
    assert user is not None  # login_required ran first
    exports.record_export(
        rt,
        user_id=user.id,
        actor=user.email,
        what="cases",
        filters=filters.query_args(),
        full_emails=user.is_admin,
    )
    rows = case_list.iter_cases(rt, filters, now)
    return csv_response(case_csv(rows, user.is_admin), f"cases-{now:%Y%m%d-%H%M}.csv")


SOURCES = {
    "case": "Recovery:",
    "charge": "Charge:",
    "message": "Message:",
    "stripe": "Stripe:",
    "admin": "Admin:",
    "link": "Link:",
}


@bp.get("/dashboard/cases/<int:case_id>")
@login_required
def case_page(case_id: int) -> str:
    found = desk.story(runtime(), case_id, full_emails=full_emails())
    if found is None:
        abort(404)
    story, can = found
    user = current_user()
    full = full_emails()
    return render_template(
        "dashboard/case.html",
        outreach=account_outreach.for_customer(runtime(), story.case.customer_id),
        show_email=lambda address: address if full else mask_email(address),
        story=story,
        case=story.case,
        can=can,
        action_form=ActionForm(),
        close_form=CloseForm(),
        close_reasons=CLOSE_REASONS,
        is_admin=bool(user and user.is_admin),
        customer_zone=ZoneInfo(story.customer_zone),
        via=labels.TRIGGERS,
        lost_reasons=labels.LOST_REASONS,
        sources=SOURCES,
    )


def _actor() -> case_admin.Actor:
    user = current_user()
    assert user is not None  # admin_required ran first
    return case_admin.Actor(user_id=user.id, email=user.email)


def _done(case_id: int, outcome: case_admin.Outcome) -> BaseResponse:
    flash(outcome.message, "ok" if outcome.done else "bad")
    return redirect(url_for("dashboard.case_page", case_id=case_id))


@bp.post("/dashboard/cases/<int:case_id>/retry")
@admin_required
def retry_now(case_id: int) -> BaseResponse:
    return _done(case_id, desk.retry_now(runtime(), case_id, _actor()))


@bp.post("/dashboard/cases/<int:case_id>/pause")
@admin_required
def pause(case_id: int) -> BaseResponse:
    return _done(case_id, desk.pause(runtime(), case_id, _actor()))


@bp.post("/dashboard/cases/<int:case_id>/resume")
@admin_required
def resume(case_id: int) -> BaseResponse:
    return _done(case_id, desk.resume(runtime(), case_id, _actor()))


@bp.post("/dashboard/cases/<int:case_id>/close")
@admin_required
def close(case_id: int) -> BaseResponse:
    form = CloseForm()
    if not form.validate():
        return error_page(400, "Choose a reason for closing the case.")
    outcome = desk.close(runtime(), case_id, form.reason.data or "", form.note.data or "", _actor())
    return _done(case_id, outcome)


@bp.post("/dashboard/cases/<int:case_id>/resend-link")
@admin_required
def resend_link(case_id: int) -> BaseResponse:
    return _done(case_id, desk.resend_link(runtime(), case_id, _actor()))
