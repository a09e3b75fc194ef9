"""Who may be texted: one rule (services/messaging/consent.py on domain/sms.consent_recorded)
asked by the reminder planner, the expiry tracker and the sender alike.

End to end (planning skips, the sender cancels with the reason, STOP and 21610 are kept) is in
tests/test_sms.py and tests/test_expiry.py; this pins the rule itself.
"""

from __future__ import annotations

import pytest

from recovery.domain import sms
from recovery.domain.reminders import ReminderRules
from recovery.models import Customer
from recovery.runtime import Runtime
from recovery.services.messaging import consent
from tests.conftest import START

PHONE = "+4915112345678"


@pytest.mark.parametrize(
    ("value", "given"),
    [
        ("true", True),
        ("YES", True),
        (" y ", True),
        ("1", True),
        ("2026-03-01", True),  # the day it was given
        (True, True),
        ("false", False),
        ("no", False),
        ("", False),
        ("0", False),
        ("maybe", False),
        ("2026", False),  # a year is not a day
        (None, False),
    ],
)
def test_what_counts_as_recorded_consent(value: object, given: bool) -> None:
    assert sms.consent_recorded({"sms_consent": value}, "sms_consent") is given


def test_consent_is_read_under_the_key_the_rules_name() -> None:
    assert not sms.consent_recorded({"sms_consent": "true"}, "texts_ok")
    assert sms.consent_recorded({"texts_ok": "true"}, "texts_ok")
    assert not sms.consent_recorded(None, "sms_consent")
    assert not sms.consent_recorded({}, "sms_consent")


def test_may_text_gives_the_reason_a_number_may_not_be_texted(runtime: Runtime) -> None:
    rules = ReminderRules.from_mapping({})
    consenting = Customer(id="cus_yes", metadata_={rules.sms_consent_metadata_key: "true"})
    silent = Customer(id="cus_no", metadata_={})
    with runtime.db.transaction() as session:
        assert consent.may_text(session, consenting, PHONE, rules) is None
        assert consent.may_text(session, silent, PHONE, rules) == consent.NO_CONSENT
        assert consent.may_text(session, None, PHONE, rules) == consent.NO_CONSENT
        assert consent.may_text(session, consenting, None, rules) == consent.NOT_E164
        assert consent.may_text(session, consenting, "015112345678", rules) == consent.NOT_E164
        consent.set_opt_out(session, PHONE, True, "inbound_stop", START)
        # A STOP wins over consent recorded in Stripe: the person said so last.
        assert consent.may_text(session, consenting, PHONE, rules) == consent.OPTED_OUT
        consent.set_opt_out(session, PHONE, False, "inbound_start", START)
        assert consent.may_text(session, consenting, PHONE, rules) is None
