"""Check batchrun's architecture: no import cycles between modules, and the layering rules.

Reads every module's top-level imports (imports inside functions are how a module
defers a heavy or optional dependency, and do not make a cycle at import time), then:

* reports every import cycle between batchrun modules (top-level imports);
* ``pacing`` and ``transport`` never import ``output``, ``jobs``, ``report`` or ``cli``,
  and nothing but ``cli`` (and ``__main__``) imports ``cli`` (any import, deferred
  ones included).

    $ .venv/bin/python scripts/check_layers.py      # exit 1 and a list when a rule breaks
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "batchrun"
LOWER = ("batchrun.pacing", "batchrun.transport")
HIGHER = ("batchrun.output", "batchrun.jobs", "batchrun.report", "batchrun.cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def top_level_imports(path: Path, name: str, *, everywhere: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    nodes = ast.walk(tree) if everywhere else iter(tree.body)
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                pkg = (
                    name.split(".")[: -node.level]
                    if path.name != "__init__.py"
                    else name.split(".")
                )
                base = ".".join([*pkg, node.module])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    # `from batchrun import checks` depends on batchrun.checks, not on the package's
    # __init__ (which only gathers the public names)
    return {m for m in found if m.startswith("batchrun.")}


def main() -> int:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for m in top_level_imports(path, name) if m in modules and m != name}
    problems: list[str] = []
    for name in sorted(graph):
        # the layering holds for deferred (function-level) imports too
        deps = {m for m in top_level_imports(modules[name], name, everywhere=True) if m in modules}
        for dep in sorted(deps):
            if name.startswith(LOWER) and dep.startswith(HIGHER):
                problems.append(f"layering: {name} imports {dep}")
            if dep.startswith("batchrun.cli") and not name.startswith(
                ("batchrun.cli", "batchrun.__main__")
            ):
                problems.append(f"layering: {name} imports {dep}")
    # cycles (Tarjan's strongly connected components)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                problems.append("cycle: " + " -> ".join(sorted(component)))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    for problem in problems:
        print(problem)
    print(
        f"{len(modules)} modules, {sum(len(d) for d in graph.values())} imports, "
        f"{len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
