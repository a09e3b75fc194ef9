"""axe-core in the browser tests: inject the vendored `axe.min.js` into a Playwright page and
run WCAG 2.1 A/AA plus axe's best-practice rules; a violation is reported with its rule, impact
and the elements it names, so a failing test says what to fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


def violations(page: Any) -> list[dict[str, Any]]:
    """axe's violations on the page as it is now (empty: none)."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE.read_text(encoding="utf-8"))
    found: list[dict[str, Any]] = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})"
        ".then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)})))",
        TAGS,
    )
    return found


def describe(found: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} - {', '.join(v['nodes'])}" for v in found
    )


def assert_accessible(page: Any, where: str = "") -> None:
    found = violations(page)
    assert not found, f"axe-core on {where or page.url}:\n{describe(found)}"
