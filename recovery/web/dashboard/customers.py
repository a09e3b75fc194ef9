"""/dashboard/customers/<id>: one customer's cases, cancel sessions, offers, messages and
cards, with links into Stripe's dashboard."""

from __future__ import annotations

from flask import abort, render_template

from recovery.services.cases import timeline_words as words
from recovery.services.reporting import customer_page as customer_info
from recovery.services.reporting.case_list import mask_email
from recovery.web import runtime
from recovery.web.dashboard import labels
from recovery.web.dashboard.auth import login_required
from recovery.web.dashboard.blueprint import bp
from recovery.web.dashboard.guards import full_emails


def recipient(channel: str, address: str, full: bool) -> str:
    """Whole for an admin; a viewer sees `j***@example.com` or the phone's last four digits."""
    if full:
        return address
    if channel == "email":
        return mask_email(address)
    return f"•••{address[-4:]}" if len(address) > 4 else "•••"


@bp.get("/dashboard/customers/<customer_id>")
@login_required
def customer_page(customer_id: str) -> str:
    found = customer_info.customer_page(runtime(), customer_id)
    if found is None:
        abort(404)
    full = full_emails()
    return render_template(
        "dashboard/customer.html",
        c=found,
        full_emails=full,
        email=(found.email or "") if full else mask_email(found.email),
        recipient=lambda channel, address: recipient(channel, address, full),
        show_email=lambda address: recipient("email", address, full),
        offer_labels=labels.OFFERS,
        template_words=words.template_words,
        SUBSCRIPTION_STATUSES=labels.SUBSCRIPTION_STATUSES,
        reason_label=labels.reason_label,
    )
