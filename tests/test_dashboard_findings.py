"""Issue 15, the dashboard half: each finding seen the way a billing team sees it - in headless
Chromium, at 1280 px and at 390 px, on a dashboard with months of seeded history behind it
(tests/support/dashboard_site.py) - and axe-core (WCAG 2.1 A/AA and best practice) over every
dashboard page at both widths."""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from recovery.domain.cases import ACTIVE
from recovery.models import (
    AuditEntry,
    CancelSession,
    CardUpdateLink,
    Customer,
    RecoveryCase,
)
from recovery.services.reporting import metrics
from recovery.services.reporting.customer_page import stripe_dashboard
from tests.conftest import make_settings
from tests.support.a11y import assert_accessible
from tests.support.browser import chromium, shot
from tests.support.dashboard import ADMIN, VIEWER
from tests.support.dashboard_site import (
    END,
    WIDTHS,
    Site,
    case_with_later_renewals,
    reversed_save,
    seeded_site,
    sign_in,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Site]:
    with seeded_site(tmp_path_factory.mktemp("findings"), sqlite_template) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture(params=sorted(WIDTHS), ids=lambda w: f"{w}px")
def width(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _page(browser: Any, site: Site, width: str, who: str = ADMIN, **opts: Any) -> Any:
    return sign_in(browser, site, WIDTHS[width], who, **opts)


def _first(site: Site, statement: Any) -> Any:
    rows = site.sql(statement)
    assert rows, statement
    return rows[0][0]


# ---- axe-core on every dashboard page -----------------------------------------------------------


def _pages(site: Site) -> list[str]:
    recovered = _first(site, select(RecoveryCase.id).where(RecoveryCase.status == "recovered"))
    working = _first(site, select(RecoveryCase.id).where(RecoveryCase.status.in_(ACTIVE)))
    customer = _first(site, select(RecoveryCase.customer_id).where(RecoveryCase.id == working))
    return [
        "/dashboard",
        "/dashboard?period=custom&from=2026-08-01&to=2026-11-20&currency=eur",
        "/dashboard?period=custom&from=2026-12-01&to=2026-11-01",  # refused: an error on the page
        "/dashboard/cases",
        "/dashboard/cases?status=open",
        "/dashboard/cases?q=zzzz-nobody",  # no match
        f"/dashboard/cases/{recovered}",
        f"/dashboard/cases/{working}",
        f"/dashboard/customers/{customer}",
        "/dashboard/cancel-sessions",
        "/dashboard/cases/999999",  # the 404 page
    ]


def test_every_dashboard_page_passes_axe(site: Site, browser: Any, width: str) -> None:
    """Zero violations of WCAG 2.1 A/AA and axe's best practice (scrollable tables reachable by
    keyboard among them: `scrollable-region-focusable` flagged 2 regions at 1280 px and 4 at
    390 px on the overview)."""
    context = browser.new_context(viewport=WIDTHS[width], bypass_csp=True)
    page = context.new_page()
    page.goto(f"{site.url}/login")
    assert_accessible(page, f"/login at {width}px")
    context.close()
    for who in (ADMIN, VIEWER):
        page = _page(browser, site, width, who, bypass_csp=True)
        for path in _pages(site) if who == ADMIN else _pages(site)[:1] + _pages(site)[6:9]:
            page.goto(site.url + path)
            page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            assert_accessible(page, f"{path} at {width}px as {who}")
        page.context.close()


# ---- 2. a reversed save is not a save -----------------------------------------------------------


def test_a_save_cancelled_later_leaves_every_figure_list_and_export(
    site: Site, browser: Any, width: str
) -> None:
    saved_id, cancelled_id = reversed_save(site)
    saved = _first(site, select(CancelSession).where(CancelSession.id == saved_id))
    page = _page(browser, site, width)
    day = saved.created_at.date().isoformat()
    page.goto(
        f"{site.url}/dashboard?period=custom&from={day}&to={END.date().isoformat()}"
        f"&currency={saved.currency}"
    )
    breakdown = page.inner_text("[data-metric=cancel-breakdown]")
    assert re.search(r"\b[1-9]\d* saved, then cancelled", breakdown), breakdown
    with site.rt.db.reading() as session:
        start, end = metrics.period_of(saved.created_at.date(), END.date())
        o = metrics.compute_overview(session, start, end, saved.currency, END)
    cf = o.cancel_flow
    assert cf.saves_reversed >= 1
    assert page.inner_text("[data-metric=save-rate]") == (
        f"{cf.saved / (cf.saved + cf.saves_reversed + cf.cancelled) * 100:.1f} %"
    )
    page.goto(f"{site.url}/dashboard/cancel-sessions?outcome=save_reversed")
    rows = page.locator("tbody tr")
    assert rows.count() >= 1
    assert "Saved, then cancelled" in rows.first.inner_text()
    page.goto(f"{site.url}/dashboard/cancel-sessions?outcome={saved.outcome}")
    listed = page.inner_text("main")
    assert saved.customer_id not in listed or "Saved, then cancelled" not in listed
    body = page.request.get(f"{site.url}/dashboard/cancel-sessions.csv").text()
    exported = {r["session_id"]: r for r in csv.DictReader(io.StringIO(body))}
    assert exported[saved_id]["outcome"] == "save_reversed"
    assert exported[saved_id]["save_reversed_at"]
    assert exported[cancelled_id]["outcome"] == "cancelled"
    shot(page, f"cancel-sessions-{width}", folder="dashboard")
    page.context.close()


# ---- 3. "open" finds open cases -----------------------------------------------------------------


def test_open_finds_every_case_in_progress(site: Site, browser: Any, width: str) -> None:
    in_progress = _first(
        site, select(func.count()).select_from(RecoveryCase).where(RecoveryCase.status.in_(ACTIVE))
    )
    assert in_progress >= 2
    page = _page(browser, site, width)
    page.goto(f"{site.url}/dashboard/cases")
    page.get_by_label("Status").select_option(label="Open (still in progress)")
    # the rows of the page the form leads to, not of the one it was on
    with page.expect_navigation():
        page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.cases tbody tr")
    assert rows.count() == in_progress
    for text in rows.all_inner_texts():
        assert re.search(r"retrying|awaiting the customer|\bopen\b", text), text
    # the demo banner's own example
    api = page.request.get(
        f"{site.url}/api/v1/cases?status=open",
        headers={"Authorization": "Bearer test-api-key"},
    ).json()
    assert len(api["data"]) == in_progress
    assert {c["status"] for c in api["data"]} <= {s.value for s in ACTIVE}
    page.context.close()


# ---- 4. a case's attempts are its invoice's -----------------------------------------------------


def test_a_cases_charges_are_its_invoices(site: Site, browser: Any, width: str) -> None:
    case = case_with_later_renewals(site)
    page = _page(browser, site, width)
    page.goto(f"{site.url}/dashboard/cases/{case.id}")
    charges = page.locator(".timeline > li.src-charge").all_inner_texts()
    assert charges, "the case's own charges are on its timeline"
    assert sum("went through" in c for c in charges) <= 1  # the one that paid it, no renewals
    api = page.request.get(
        f"{site.url}/api/v1/cases/{case.id}", headers={"Authorization": "Bearer test-api-key"}
    ).json()
    assert [a["status"] for a in api["attempts"]].count("succeeded") <= 1
    assert case.closed_at is not None
    closed = int(case.closed_at.timestamp())
    assert all(a["at"] <= closed + 60 for a in api["attempts"])
    page.context.close()


# ---- 9. find anything; whole emails for admins, exports follow the role and are audited ---------


def test_search_by_any_part_or_id(site: Site, browser: Any, width: str) -> None:
    case = _first(
        site, select(RecoveryCase).where(RecoveryCase.status.in_(ACTIVE)).order_by(RecoveryCase.id)
    )
    customer = _first(site, select(Customer).where(Customer.id == case.customer_id))
    assert customer.email and customer.name
    local = customer.email.split("@")[0]
    surname = customer.name.split()[-1]
    page = _page(browser, site, width)
    for typed in (
        local[1:-1].upper(),  # any part of the address, any case
        surname[1:].lower(),  # any part of the name
        case.invoice_id,
        case.customer_id,
        f"#{case.id}",
    ):
        page.goto(f"{site.url}/dashboard/cases")
        page.get_by_label("Search").fill(typed)
        # the rows of the page the form leads to, not of the one it was on
        with page.expect_navigation():
            page.get_by_role("button", name="Filter").click()
        found = page.locator("table.cases tbody tr").all_inner_texts()
        assert any(f"#{case.id}" in row for row in found), (typed, found)
    # an admin reads the whole address
    assert customer.email in page.inner_text("table.cases")
    page.context.close()
    viewer = _page(browser, site, width, VIEWER)
    viewer.goto(f"{site.url}/dashboard/cases?q={case.customer_id}")
    text = viewer.inner_text("table.cases")
    assert customer.email not in text and f"{customer.email[0]}***@" in text
    viewer.context.close()


def test_exports_follow_the_role_and_are_audited(site: Site, browser: Any) -> None:
    for who, whole in ((ADMIN, True), (VIEWER, False)):
        page = _page(browser, site, "1280", who)
        page.goto(f"{site.url}/dashboard/cases?status=open")
        with page.expect_download() as info:
            page.get_by_role("link", name="Export CSV").click()
        rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
        emails = [r["customer_email"] for r in rows if r["customer_email"]]
        assert emails and all(("***@" not in e) == whole for e in emails), emails
        page.context.close()
    audited = site.sql(
        select(AuditEntry.actor, AuditEntry.details).where(AuditEntry.action == "export_cases")
    )
    assert [(a, d["emails"], d["filters"]) for a, d in audited][-2:] == [
        (ADMIN, "full", {"status": "open"}),
        (VIEWER, "masked", {"status": "open"}),
    ]


# ---- 10. a customer page ------------------------------------------------------------------------


def test_a_customer_page_has_everything_with_links_into_stripe(
    site: Site, browser: Any, width: str
) -> None:
    saved_id, _ = reversed_save(site)
    customer_id = _first(
        site, select(CancelSession.customer_id).where(CancelSession.id == saved_id)
    )
    cases = site.sql(select(RecoveryCase.invoice_id).where(RecoveryCase.customer_id == customer_id))
    page = _page(browser, site, width)
    page.goto(f"{site.url}/dashboard/cancel-sessions?outcome=save_reversed")
    page.locator("tbody tr", has_text=customer_id).first.get_by_role("link").first.click()
    # (waited for: the headings below are counted on the page the link leads to)
    page.wait_for_url(f"{site.url}/dashboard/customers/{customer_id}")
    for heading in (
        "Subscriptions",
        "Recovery cases",
        "Cancel-flow sessions",
        "Offers accepted",
        "Cards",
        "Messages",
    ):
        assert page.get_by_role("heading", name=heading).count() == 1
    stripe = "https://dashboard.stripe.com/test/"
    assert (
        page.get_by_role("link", name="Open in Stripe (test mode)").get_attribute("href")
        == f"{stripe}customers/{customer_id}"
    )
    for (invoice,) in cases:
        assert page.get_by_role("link", name=invoice).get_attribute("href") == (
            f"{stripe}invoices/{invoice}"
        )
    assert "Cancelled afterwards" in page.inner_text("main")  # the offer that did not hold
    shot(page, f"customer-{width}", folder="dashboard")
    page.context.close()


def test_stripe_links_follow_the_key_mode(tmp_path: Path) -> None:
    def base(key: str) -> str | None:
        return stripe_dashboard(make_settings("sqlite://", tmp_path, stripe_api_key=key))

    assert base("sk_test_abc") == "https://dashboard.stripe.com/test/"
    assert base("rk_test_abc") == "https://dashboard.stripe.com/test/"
    assert base("sk_live_abc") == "https://dashboard.stripe.com/"
    assert base("") is None  # the built-in stand-in: nothing in Stripe to link to


# ---- 11. readable timelines ---------------------------------------------------------------------

RAW = re.compile(
    r"\b(stop|amount|wait for new card|cause|link id|setup intent|attempts|planned for): "
    r"|cancel_subscription|is category \d|True\b|False\b"
)


def test_timelines_are_sentences_with_their_zones(site: Site, browser: Any, width: str) -> None:
    retrying = _first(
        site,
        select(RecoveryCase).where(RecoveryCase.status == "retrying").order_by(RecoveryCase.id),
    )
    recovered = _first(  # one whose customer opened a card-update link from a message
        site,
        select(RecoveryCase)
        .join(CardUpdateLink, CardUpdateLink.case_id == RecoveryCase.id)
        .where(RecoveryCase.status == "recovered", CardUpdateLink.first_opened_at.is_not(None))
        .order_by(RecoveryCase.id),
    )
    page = _page(browser, site, width)
    for case in (retrying, recovered):
        page.goto(f"{site.url}/dashboard/cases/{case.id}")
        timeline = page.inner_text("ol.timeline")
        assert not RAW.search(timeline), RAW.search(timeline)
        for line in page.locator("ol.timeline > li").all_inner_texts():
            assert re.search(r"\d\d:\d\d UTC", line), line  # every time says its zone
    # the retry plan shows the customer's clock beside the business's
    page.goto(f"{site.url}/dashboard/cases/{retrying.id}")
    plan = page.locator("ol.timeline > li", has_text="retry the card").last.inner_text()
    assert re.search(r"Planned for .+ UTC", plan), plan
    zone = page.locator(".facts div", has_text="Customer's time zone").locator("dd").inner_text()
    if zone != "UTC":
        assert f"the customer's time ({zone})" in plan
    assert page.get_by_role("button", name="Retry now").count() <= 1
    shot(page, f"timeline-{width}", folder="dashboard")
    # a link's use sits under the message that carried it; no actions on a recovered case
    page.goto(f"{site.url}/dashboard/cases/{recovered.id}")
    carried = page.locator("ol.timeline > li.src-message", has=page.locator("ul.sub"))
    assert carried.count() >= 1
    assert "Its link was opened" in carried.first.inner_text()
    assert page.locator("ol.timeline > li.src-link").count() == 0
    assert page.get_by_role("button", name="Retry now").count() == 0
    assert "Nothing to do: the case is recovered." in page.inner_text("main")
    # the header's card is the one that was declined, not the one that paid after
    facts = page.locator(".facts dt").all_inner_texts()
    assert "Declined card" in facts and "Card" not in facts, facts
    page.context.close()


# ---- 12. figures explained and complete ---------------------------------------------------------


def test_every_figure_says_what_it_counts(site: Site, browser: Any, width: str) -> None:
    page = _page(browser, site, width)
    page.goto(f"{site.url}/dashboard?period=90")
    defs = page.locator(".tile .def").all_inner_texts()
    for key in (
        "failed",
        "recovered",
        "recovered_monthly_revenue",
        "replaced_in_time",
        "save_rate",
    ):
        assert metrics.DEFINITIONS[key] in defs, key
    # every currency side by side, and as CSV
    columns = page.locator("[data-table=by-currency] thead th").all_inner_texts()
    assert columns[1:] == ["USD", "EUR"]
    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    rows = list(csv.reader(io.StringIO(Path(info.value.path()).read_text())))
    assert rows[0] == ["figure", "USD", "EUR"]
    assert [r[0] for r in rows][1:4] == ["period (cases opened, UTC, both days included)",
                                          "failed invoices", "failed amount"]  # fmt: skip
    # recovery by failure month: the last 12 months, open windows pending
    months = page.locator("[data-table=by-month] tbody tr").all_inner_texts()
    assert len(months) == 12 and months[-1].startswith("November 2026")
    assert "(pending)" in months[-2]
    assert page.locator("#h-month + p + div svg:visible, #h-month ~ div svg:visible").count() >= 1
    # lost revenue by reason
    assert page.locator("[data-table=lost-by-reason] tbody tr").count() >= 1
    # replaced in time: "n of m" and, for cards not expired yet, pending
    replaced = page.inner_text("[data-metric=replaced-in-time]")
    assert re.fullmatch(r"\d+ of \d+", replaced)
    assert page.inner_text("[data-metric=replaced-pending]")
    shot(page, f"overview-{width}", folder="dashboard")
    page.context.close()


# ---- 13. layout at 1280 and 390 px --------------------------------------------------------------

NEXT_STEPS = {
    "retry planned",
    "waiting for the customer to add a new card",
    "waiting for the customer to confirm the payment with their bank",
    "waiting for the customer to act",
    "waiting for the customer",
    "deciding the first step",
    "dunning paused by an admin",
    "nothing: paid",
    "nothing: dunning ended unpaid",
    "nothing: closed",
}


def _y_ticks(page: Any) -> list[float]:
    labels = page.locator("#h-weekly ~ div:visible svg .axis.y .guides text").all_text_contents()
    return [float(re.sub(r"[^\d.]", "", t)) for t in labels if re.search(r"\d", t)]


def test_layout_at_both_widths(site: Site, browser: Any, width: str) -> None:
    page = _page(browser, site, width)
    page.goto(f"{site.url}/dashboard?period=90")
    # even ticks on the weekly chart (the EUR one read 0/20/40/60/90)
    for currency in ("usd", "eur"):
        page.goto(f"{site.url}/dashboard?period=90&currency={currency}")
        ticks = _y_ticks(page)
        assert len(ticks) >= 3, ticks
        steps = {round(b - a, 6) for a, b in itertools.pairwise(ticks)}
        assert len(steps) == 1, ticks
        # the currency field shows the currency the figures are in
        assert page.locator("#p-currency").input_value() == currency
        assert f"in {currency.upper()}, as of" in page.inner_text("main")
    # every scrollable table can be reached with the keyboard
    for region in page.locator(".table-wrap").all():
        assert region.get_attribute("tabindex") == "0" and region.get_attribute("role") == "region"
    if width == "1280":
        # no table is cut off at a laptop's width (the decline categories' was)
        cut = page.evaluate(
            "[...document.querySelectorAll('.table-wrap')].filter(w => w.offsetParent)"
            ".filter(w => w.scrollWidth > w.clientWidth + 1).map(w => w.getAttribute('aria-label'))"
        )
        assert cut == [], cut
    else:
        # charts drawn for the phone: their text is readable, not shrunk to 6 px
        heights = page.evaluate(
            "[...document.querySelectorAll('main svg')].filter(s => s.getBoundingClientRect()"
            ".width > 0).flatMap(s => [...s.querySelectorAll('text')]).map(t => "
            "t.getBoundingClientRect().height).filter(h => h > 0)"
        )
        assert heights and min(heights) >= 10, min(heights)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    # the period picker's dates follow the period picked
    page.get_by_label("Period", exact=True).select_option("7")
    assert page.locator("#p-from").input_value() == (END - timedelta(days=6)).date().isoformat()
    assert page.locator("#p-to").input_value() == END.date().isoformat()
    page.get_by_role("button", name="Show").click()
    assert page.locator("#p-from").input_value() == (END - timedelta(days=6)).date().isoformat()
    page.locator("#p-from").fill("2026-09-01")
    assert page.get_by_label("Period", exact=True).input_value() == "custom"
    # the case list: whole words in "next step", the status in sight on a phone
    page.goto(f"{site.url}/dashboard/cases")
    for cell in page.locator("table.cases tbody tr td:last-child").all_inner_texts():
        assert cell.split("\n")[0] in NEXT_STEPS, cell
    pill = page.locator("table.cases tbody tr").first.locator(".pill").first.bounding_box()
    assert pill is not None and pill["x"] + pill["width"] <= WIDTHS[width]["width"]
    page.context.close()
