"""/dashboard/cancel-sessions (and its CSV): the cancel-flow sessions, filtered and paged."""

from __future__ import annotations

from flask import Response, render_template, request

from recovery.services.reporting import cancel_sessions as listing
from recovery.services.reporting import exports
from recovery.services.reporting.case_list import BadFilter
from recovery.web import runtime
from recovery.web.dashboard import labels
from recovery.web.dashboard.auth import current_user, login_required
from recovery.web.dashboard.blueprint import bp
from recovery.web.dashboard.csv_export import csv_response, session_csv
from recovery.web.dashboard.guards import error_page, full_emails


@bp.get("/dashboard/cancel-sessions")
@login_required
def cancel_sessions() -> Response | str:
    rt = runtime()
    try:
        filters = listing.parse_filters(request.args)
        after = listing.decode_cursor(request.args.get("after"))
    except BadFilter as exc:
        return error_page(400, str(exc))
    page = listing.page(rt, filters, after)
    return render_template(
        "dashboard/cancel_sessions.html",
        page=page,
        filters=filters,
        args=filters.query_args(),
        first_page=after is None,
        outcomes=listing.OUTCOMES,
        reasons=[r.id for r in rt.rules.cancel_flow.reasons],
        full_emails=full_emails(),
        outcome_labels=listing.OUTCOME_LABELS,
        stripe_labels=listing.STRIPE_LABELS,
        offer_labels=labels.OFFERS,
        reason_label=labels.reason_label,
    )


@bp.get("/dashboard/cancel-sessions.csv")
@login_required
def cancel_sessions_csv() -> Response:
    rt = runtime()
    try:
        filters = listing.parse_filters(request.args)
    except BadFilter as exc:
        return error_page(400, str(exc))
    user = current_user()
    assert user is not None  # login_required ran first
    exports.record_export(
        rt,
        user_id=user.id,
        actor=user.email,
        what="cancel_sessions",
        filters=filters.query_args(),
        full_emails=user.is_admin,
    )
    rows = listing.iter_sessions(rt, filters)
    name = f"cancel-sessions-{rt.clock.now():%Y%m%d-%H%M}.csv"
    return csv_response(session_csv(rows, user.is_admin), name)
