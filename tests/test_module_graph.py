"""The module graph shows the design: no import cycles (imports inside functions included), the
pure domain loads no framework, and the web layer runs no SQL of its own.

The layer rules themselves are import-linter contracts (`[tool.importlinter]` in
pyproject.toml, run by `make lint` and CI); this file checks what a contract cannot say.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "recovery"


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Tarjan's algorithm over the package's modules: every group of modules that import one
    another, directly or through others (a group of one is no cycle unless it imports itself)."""
    modules = sorted(m for m in graph.modules if m.startswith("recovery"))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0

    def edges(module: str) -> list[str]:
        return sorted(
            m for m in graph.find_modules_directly_imported_by(module) if m.startswith("recovery")
        )

    # Iterative, so a deep import chain cannot hit the recursion limit.
    for start in modules:
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = []
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        work.append((start, iter(edges(start))))
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges(child))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in edges(node):
                    groups.append(sorted(group))
    return groups


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("recovery")
    cycles = strongly_connected(graph)
    described = []
    for group in cycles:
        chain = graph.find_shortest_chain(importer=group[0], imported=group[-1])
        back = graph.find_shortest_chain(importer=group[-1], imported=group[0])
        described.append(f"{' -> '.join(chain or ())} ... {' -> '.join(back or ())}")
    assert cycles == [], "import cycles:\n" + "\n".join(described)


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above would pass on a graph it cannot read: show it reports a real cycle."""
    graph = grimp.ImportGraph()
    for name in ("recovery", "recovery.a", "recovery.b", "recovery.c"):
        graph.add_module(name)
    graph.add_import(importer="recovery.a", imported="recovery.b")
    graph.add_import(importer="recovery.b", imported="recovery.c")
    graph.add_import(importer="recovery.c", imported="recovery.a")
    assert strongly_connected(graph) == [["recovery.a", "recovery.b", "recovery.c"]]


def test_importing_the_domain_loads_no_framework() -> None:
    """`recovery.domain` is pure: importing every module of it pulls in no web framework,
    database toolkit or provider SDK (checked in a fresh interpreter)."""
    domain_modules = sorted(
        "recovery.domain." + path.stem
        for path in (PACKAGE / "domain").glob("*.py")
        if path.stem != "__init__"
    )
    script = (
        "import sys\n"
        f"for name in {domain_modules!r}:\n"
        "    __import__(name)\n"
        "heavy = ('flask', 'werkzeug', 'sqlalchemy', 'stripe', 'twilio', 'jinja2', 'apscheduler')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_views_run_no_sql() -> None:
    """Views parse, call a service and render: nothing under recovery/web builds a query or
    opens a session. SQLAlchemy's exceptions may be named (a database that is down is a 503)."""
    offenders = []
    for path in sorted((PACKAGE / "web").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = node.module
                if module.startswith("sqlalchemy") and module != "sqlalchemy.exc":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {module}")
                if module in ("recovery.db", "recovery.models") or module.startswith(
                    "recovery.models."
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {module}")
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("sqlalchemy") and alias.name != "sqlalchemy.exc":
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {alias.name}")
    assert offenders == []


def test_no_module_over_500_lines() -> None:
    """One file, one idea: a file past 500 lines is split along a seam."""
    long = {
        str(path.relative_to(ROOT)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > 500
    }
    assert long == {}
