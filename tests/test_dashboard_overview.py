"""The Overview page: a signed-in user sees the period's numbers, tables and inline SVG charts
that load nothing from elsewhere; a visitor who is not signed in is sent to the sign-in page."""

from __future__ import annotations

import re
from typing import Any

import pytest

from recovery.runtime import Runtime
from recovery.services.accounts import users as accounts
from recovery.web import charts
from tests.conftest import START
from tests.support.browser import PHONE, Served, chromium, shot
from tests.support.dashboard import VIEWER, add_user, count_queries, login
from tests.support.metrics_data import add_case, at, seed_all

OCTOBER = "/dashboard?period=custom&from=2026-10-01&to=2026-10-31&currency=usd"


@pytest.fixture
def seeded(runtime: Runtime) -> Runtime:
    with runtime.db.transaction() as session:
        seed_all(session)
    return runtime


def sign_in_as(rt: Runtime, client: Any) -> None:
    """Through the real sign-in form, as a viewer (the overview is for every role)."""
    add_user(rt, VIEWER, "viewer")
    assert login(client, VIEWER).status_code == 302


def metric(html: str, name: str) -> str:
    found = re.search(rf'data-metric="{name}">(.*?)</', html, re.S)
    assert found, name
    return " ".join(found.group(1).split())


def test_signed_out_visitor_is_sent_to_sign_in(seeded: Runtime, client: Any) -> None:
    response = client.get(OCTOBER)
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_overview_shows_the_periods_numbers(seeded: Runtime, client: Any) -> None:
    sign_in_as(seeded, client)
    response = client.get(OCTOBER)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    # the figures of tests/test_metrics.py, formatted for people
    assert metric(html, "failed-amount") == "$169.00"
    assert metric(html, "failed-count") == "9 invoices"
    assert metric(html, "recovered-amount") == "$84.00"
    assert metric(html, "recovered-share") == "49.7 %"
    assert metric(html, "in-progress-amount") == "$37.00"
    assert metric(html, "lost-amount") == "$48.00"
    assert metric(html, "recovered-mrr") == "$73.33"
    assert metric(html, "median-days") == "2.0 days"
    assert metric(html, "expiring-30") == "1"
    assert metric(html, "expiring-60") == "3"
    assert metric(html, "replaced-in-time") == "2 of 4"
    assert metric(html, "save-rate") == "40.0 %"
    assert metric(html, "revenue-saved") == "$44.00"
    assert "Still thinking" in html and "Card-update link" in html
    assert "Too expensive" in html  # a reason's label, not its id


def test_charts_are_inline_svg_with_nothing_from_elsewhere(seeded: Runtime, client: Any) -> None:
    sign_in_as(seeded, client)
    html = client.get(OCTOBER).get_data(as_text=True)
    # weekly trend, recovery by month, triggers, lost by reason, categories, cancel reasons -
    # each drawn for a wide column and for a phone
    assert html.count("<svg ") == 12
    assert 'aria-label="Failed and recovered per week"' in html
    # no inline script: the one script is the period picker's, from this site
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/dashboard/overview.js" defer>']
    # every src/href stays on this site
    for url in re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', html, re.I):
        assert not re.match(r"(?i)(https?:)?//", url), url
    assert "url(http" not in html and "@import" not in html


def test_presets_and_currency_picker(seeded: Runtime, client: Any) -> None:
    sign_in_as(seeded, client)
    # today is 2026-11-02: the last 7 days (Oct 27 - Nov 2) hold c8, c12 and c11
    html = client.get("/dashboard?period=7").get_data(as_text=True)
    assert metric(html, "failed-count") == "3 invoices"
    assert metric(html, "failed-amount") == "$77.00"  # 800 + 900 + 6000 cents
    assert 'value="7" selected' in html
    html = client.get("/dashboard?period=90&currency=jpy").get_data(as_text=True)
    assert metric(html, "failed-amount") == "¥5,000"  # zero-decimal: 5000 yen, not 50
    assert '<option value="jpy" selected>' in html


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("period=custom&from=2026-10-31&to=2026-10-01", "from must be on or before to"),
        ("period=custom&from=someday&to=2026-10-01", "From must be a date"),
        ("period=365", "choose a period"),
        ("currency=dollars", "three-letter"),
        ("period=custom&from=2020-01-01&to=2026-10-01", "at most 3 years"),
    ],
)
def test_bad_choices_get_400_with_the_reason(
    seeded: Runtime, client: Any, query: str, message: str
) -> None:
    sign_in_as(seeded, client)
    response = client.get(f"/dashboard?{query}")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert message in html
    assert 'name="period"' in html  # the form is there to fix it


def test_page_in_chromium(seeded: Runtime, app: Any) -> None:
    """A person's view: sign in, read the overview with its charts; nothing is fetched from
    anywhere but this site, and a screenshot is kept for people to look at."""
    password = "metrics page test passphrase 7"
    with seeded.db.transaction() as session:
        accounts.create_user(
            session, email="ana@example.com", role="viewer", password=password, now=START
        )
    served = Served()
    served.serve(app)
    try:
        with chromium() as browser:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            elsewhere: list[str] = []
            page.on(
                "request",
                lambda r: None if r.url.startswith(served.url) else elsewhere.append(r.url),
            )
            page.goto(served.url + OCTOBER)
            page.fill("#email", "ana@example.com")
            page.fill("#password", password)
            page.click("button[type=submit]")
            page.wait_for_selector("[data-metric=failed-amount]")
            assert page.inner_text("[data-metric=failed-amount]") == "$169.00"
            assert page.locator("main svg:visible").count() == 6
            box = page.locator("main svg:visible").first.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100
            path = shot(page, "overview", folder="dashboard")
            assert path.stat().st_size > 10_000
            page.set_viewport_size(PHONE)
            page.reload()
            wide = page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")
            assert not wide, "the page scrolls sideways on a phone"
            shot(page, "overview-phone", folder="dashboard")
            assert elsewhere == []
    finally:
        served.stop()


def test_page_query_count_does_not_grow_with_the_cases(seeded: Runtime, client: Any) -> None:
    sign_in_as(seeded, client)
    with count_queries(seeded) as few:
        assert client.get(OCTOBER).status_code == 200
    with seeded.db.transaction() as session:
        for i in range(120):
            add_case(
                session,
                f"more{i}",
                status=("recovered", "lost")[i % 2],
                recovered_via="hosted_invoice_page" if i % 2 == 0 else None,
                amount_due=500,
                amount_recovered=500 if i % 2 == 0 else 0,
                opened_at=at(10, 1 + i % 30, 6),
                closed_at=at(10, 1 + i % 30, 18),
                card_brand=("visa", "jcb", "unionpay")[i % 3],
                subscription_id=f"sub_more{i}",
            )
    with count_queries(seeded) as many:
        html = client.get(OCTOBER).get_data(as_text=True)
    assert metric(html, "failed-count") == "129 invoices"
    assert len(many) == len(few)


def test_a_fresh_install_shows_an_empty_overview(runtime: Runtime, client: Any) -> None:
    sign_in_as(runtime, client)
    response = client.get("/dashboard")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert metric(html, "failed-count") == "0 invoices"
    assert metric(html, "recovered-share") == "–"
    assert "No cancel-flow sessions in this period." in html


def test_chart_labels_are_escaped() -> None:
    # Reason labels come from the business's rules file; the SVG is inlined unescaped.
    svg = str(charts.horizontal_counts([('<img src=x onerror="alert(1)">', 2)], "n", 'a "b"'))
    assert "<img" not in svg and "&lt;img" in svg
    assert 'aria-label="a &#34;b&#34;"' in svg


def test_a_chart_is_drawn_again_when_its_figures_change(seeded: Runtime, client: Any) -> None:
    # Charts are memoized on their figures: a new recovery must still show in the chart.
    sign_in_as(seeded, client)
    before = client.get(OCTOBER).get_data(as_text=True)
    svgs = re.findall(r"<svg .*?</svg>", before, re.S)
    assert re.findall(r"<svg .*?</svg>", client.get(OCTOBER).get_data(as_text=True), re.S) == svgs
    with seeded.db.transaction() as session:
        add_case(
            session,
            "late_jcb",
            status="recovered",
            recovered_via="hosted_invoice_page",
            amount_due=98_700,
            amount_recovered=98_700,
            opened_at=at(10, 20, 6),
            closed_at=at(10, 21, 6),
            card_brand="jcb",
            subscription_id="sub_late_jcb",
        )
    after = client.get(OCTOBER).get_data(as_text=True)

    weekly_before = svgs[0]  # failed and recovered per week: the week of the 21st moved
    weekly_after = re.findall(r"<svg .*?</svg>", after, re.S)[0]
    assert weekly_after != weekly_before


def test_chart_memo_keys_on_nested_figures() -> None:
    first = charts.horizontal_counts([("Too expensive", 2)], "Sessions", "by reason")
    again = charts.horizontal_counts([("Too expensive", 2)], "Sessions", "by reason")
    other = charts.horizontal_counts([("Too expensive", 3)], "Sessions", "by reason")
    assert again is first
    assert other != first and ">3<" in str(other)
