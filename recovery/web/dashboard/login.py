"""/login and /logout. One message for every failed sign-in; POST /login is rate-limited per
IP and per email address, so guessing is slow whichever one an attacker varies."""

from __future__ import annotations

import hashlib

from flask import current_app, redirect, render_template, request, url_for
from limits import RateLimitItem, parse
from werkzeug.wrappers import Response

from recovery.services.accounts import signin
from recovery.web import runtime
from recovery.web.dashboard.auth import current_user, safe_next, sign_in, sign_out
from recovery.web.dashboard.blueprint import bp
from recovery.web.dashboard.forms import LoginForm, LogoutForm
from recovery.web.dashboard.guards import error_page

FAILED = "Email or password is incorrect."
PER_IP: RateLimitItem = parse("10/minute")
PER_EMAIL: RateLimitItem = parse("10/minute")


def _allowed(email: str) -> bool:
    """Count this attempt against the IP and the address; False once either is over its limit.
    Uses the app's rate-limit storage (memory, or Redis/Memcached when configured)."""
    limiter = current_app.extensions.get("card_update_limiter")
    if limiter is None or not limiter.enabled:
        return True
    # The address is hashed: the limiter's storage (maybe a shared Redis) holds no emails.
    who = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    ip = request.remote_addr or "unknown"
    by_ip = limiter.limiter.hit(PER_IP, "dashboard_login_ip", ip)
    by_email = limiter.limiter.hit(PER_EMAIL, "dashboard_login_email", who)
    return bool(by_ip and by_email)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    form = LoginForm()
    target = safe_next(request.values.get("next")) or url_for("dashboard.overview")
    if request.method == "GET":
        if current_user() is not None:
            return redirect(target)
        form.next.data = target
        return render_template("dashboard/login.html", form=form, problem=None)
    email = (form.email.data or "")[:320]
    if not _allowed(email):
        response = error_page(429)
        response.headers["Retry-After"] = "60"
        return response
    problem = None
    if form.validate():
        account = signin.sign_in(runtime(), email, form.password.data or "")
        if account is not None:
            sign_in(account)
            return redirect(target)
    problem = FAILED
    form.password.data = ""
    return render_template("dashboard/login.html", form=form, problem=problem), 401


@bp.post("/logout")
def logout() -> Response:
    LogoutForm()  # the token was checked before this view (security.protect)
    sign_out()
    return redirect(url_for("dashboard.login"))
