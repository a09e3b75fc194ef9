"""The dashboard's forms (Flask-WTF: each carries and checks its CSRF token)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Length

CLOSE_REASONS = [
    ("paid_elsewhere", "Paid outside Stripe"),
    ("written_off", "Written off"),
    ("customer_left", "Customer left"),
    ("duplicate", "Duplicate case"),
    ("other", "Other"),
]


class LoginForm(FlaskForm):  # type: ignore[misc]  # flask_wtf ships no types
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    next = HiddenField()


class ActionForm(FlaskForm):  # type: ignore[misc]  # flask_wtf ships no types
    """Retry now, pause, resume, resend link: nothing but the token."""


class CloseForm(FlaskForm):  # type: ignore[misc]  # flask_wtf ships no types
    reason = SelectField(
        "Reason", choices=[value for value, _ in CLOSE_REASONS], validators=[DataRequired()]
    )
    note = StringField("Note", validators=[Length(max=500)])


class LogoutForm(FlaskForm):  # type: ignore[misc]  # flask_wtf ships no types
    pass
