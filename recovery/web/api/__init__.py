"""The JSON API under /api/v1, for the business's own systems: one blueprint (`blueprint.py`,
bearer keys checked there), one module per resource. Importing the package adds every route.

GET  /events                     received Stripe events            events.py
GET  /customers/<id>             a customer from the mirror        customers.py
GET  /customers/<id>/billing-status  where their billing stands   billing_status.py
POST/GET/DELETE /customers/<id>/contacts[/<id>]  account contacts  contacts.py
GET  /cases, /cases/<id>         recovery cases                    cases.py
GET  /metrics                    the overview's numbers            metrics.py
GET  /experiments                experiments and their results     experiments.py
POST/GET /cancel-sessions[/<id>] hosted cancel flow sessions       cancel_sessions.py
GET  /shadow-report              Stripe's retries vs. our plan      shadow_report.py
GET  /openapi.json               this API's description (public)   openapi.py
"""

from recovery.web.api import (
    billing_status,
    cancel_sessions,
    cases,
    contacts,
    customers,
    events,
    experiments,
    metrics,
    openapi,
    shadow_report,
)
from recovery.web.api.blueprint import bp

del (
    billing_status,
    cancel_sessions,
    cases,
    contacts,
    customers,
    events,
    experiments,
    metrics,
    openapi,
    shadow_report,
)

__all__ = ["bp"]
