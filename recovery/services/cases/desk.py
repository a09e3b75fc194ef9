"""The dashboard's case desk: a case's page, read in one transaction, and each admin action
(`admin.py`) in a transaction of its own, so a view only says which one to run."""

from __future__ import annotations

from recovery.runtime import Runtime
from recovery.services.cases import admin
from recovery.services.cases import timeline as case_timeline
from recovery.services.cases.admin import Actor, Outcome


def story(
    rt: Runtime, case_id: int, *, full_emails: bool = False
) -> tuple[case_timeline.CaseStory, admin.Available] | None:
    """The case and its whole story, merged in time order, with the actions that can apply to
    it now; None when there is no such case."""
    with rt.db.reading() as session:
        found = case_timeline.story(session, case_id, full_emails=full_emails)
        if found is None:
            return None
        return found, admin.available(session, found.case, rt.rules, rt.clock.now())


def retry_now(rt: Runtime, case_id: int, actor: Actor) -> Outcome:
    with rt.db.transaction() as session:
        return admin.retry_now(session, case_id, rt.rules, actor, rt.clock.now())


def pause(rt: Runtime, case_id: int, actor: Actor) -> Outcome:
    with rt.db.transaction() as session:
        return admin.pause(session, case_id, actor, rt.clock.now())


def resume(rt: Runtime, case_id: int, actor: Actor) -> Outcome:
    with rt.db.transaction() as session:
        return admin.resume(session, case_id, rt.rules, rt.settings, actor, rt.clock.now())


def close(rt: Runtime, case_id: int, reason: str, note: str, actor: Actor) -> Outcome:
    with rt.db.transaction() as session:
        return admin.close(session, case_id, reason, note, actor, rt.clock.now())


def resend_link(rt: Runtime, case_id: int, actor: Actor) -> Outcome:
    with rt.db.transaction() as session:
        return admin.resend_link(session, case_id, rt.rules, rt.settings, actor, rt.clock.now())
