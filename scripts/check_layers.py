"""Check batchrun's architecture: a layer table for every module, and no import cycle.

Reads every import of every module under ``batchrun/``, the ones inside functions
included (a deferred import is still a dependency, and a circle through one is a circle
waiting to happen), and leaves out only the imports under ``if TYPE_CHECKING:`` (never
executed). ``from batchrun.pkg import name`` depends on ``batchrun.pkg.name`` when that
is a module, else on ``batchrun/pkg/__init__.py``. Then:

* every module belongs to one layer of ``LAYERS`` (its longest matching prefix); a
  module may import its own layer and the layers below it, never a layer above
  ("upward import");
* the whole graph has no cycle (Tarjan's strongly connected components), inside a layer
  included;
* a module that belongs to no layer is itself a finding (a new package must be placed).

    $ .venv/bin/python scripts/check_layers.py          # exit 1 and a list on a finding
    $ .venv/bin/python scripts/check_layers.py --graph  # also print each module's layer
    $ .venv/bin/python scripts/check_layers.py --package DIR  # check another copy

``scripts/check`` (run by ``scripts/test`` before the tests, and so by ``.ci/run``) runs it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "batchrun"

# Bottom first. A module may import its own layer and any layer listed before it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "batchrun._version",
            "batchrun.errors",
            "batchrun._values",
            "batchrun._ids",
            "batchrun._redact",
            "batchrun._uris",
            "batchrun._arrowbuf",
            "batchrun._apis",
            "batchrun._models",
            "batchrun._schemas",
            "batchrun._confidence",
            "batchrun._endpoint",
            "batchrun._labels",
            "batchrun._runfiles",
            "batchrun._input.locations",
            "batchrun._input.kinds",
            "batchrun.sim.config",
        ),
    ),
    (
        "prices",
        (
            "batchrun._cost.price",
            "batchrun._cost.prices",
            "batchrun._cost.pricefile",
            "batchrun._cost.genai",
            "batchrun._cost.modelnames",
        ),
    ),
    ("templating", ("batchrun._templating",)),
    ("settings", ("batchrun._settings", "batchrun._checks", "batchrun._response_formats")),
    ("stages", ("batchrun._input", "batchrun._pacing", "batchrun._transport", "batchrun._cache")),
    (
        "output",
        (
            "batchrun._output",
            "batchrun._jobs.evaluate",
            "batchrun._jobs.metrics",
            "batchrun._jobs.calibration",
            "batchrun._jobs.gold",
            "batchrun._report.tables",
            "batchrun._report.statistics",
        ),
    ),
    ("engine", ("batchrun._engine",)),
    ("cost", ("batchrun._cost",)),
    ("jobs", ("batchrun._jobs",)),
    ("modes", ("batchrun._batch", "batchrun._scale", "batchrun.sim", "batchrun._report")),
    ("library", ("batchrun._api",)),
    ("surface", ("batchrun._cli", "batchrun.ray", "batchrun.__main__", "batchrun")),
]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer index)
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # the root package ("batchrun", its __init__) is itself only, not a prefix
            if module == prefix or (prefix != "batchrun" and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), i)
    return None if best is None else best[1]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST):  # type: ignore[no-untyped-def]
    """Every node, skipping the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for sub in child.orelse:
                yield sub
                yield from _walk(sub)
            continue
        yield child
        yield from _walk(child)


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in modules:
                    found.add(target)
                elif base in modules:
                    found.add(base)
    found.discard(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, todo = work[-1]
            if todo:
                w = todo.pop()
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, sorted(graph[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component: list[str] = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def main(argv: list[str]) -> int:
    package = PACKAGE
    if "--package" in argv:  # another tree (the tests give one with a deliberate finding)
        package = Path(argv[argv.index("--package") + 1]).resolve()
    paths = {module_name(p, package.parent): p for p in package.rglob("*.py")}
    modules = set(paths)
    graph = {name: imports_of(path, name, modules) for name, path in paths.items()}
    problems: list[str] = []
    for name in sorted(graph):
        mine = layer_of(name)
        if mine is None:
            problems.append(f"no layer: {name} (add its package to LAYERS)")
            continue
        for dep in sorted(graph[name]):
            theirs = layer_of(dep)
            if theirs is not None and theirs > mine:
                problems.append(
                    f"upward import: {name} ({LAYERS[mine][0]}) imports {dep} ({LAYERS[theirs][0]})"
                )
    for component in cycles(graph):
        problems.append("cycle: " + " -> ".join(component))
    if "--graph" in argv:
        for name in sorted(graph):
            layer = layer_of(name)
            print(f"{LAYERS[layer][0] if layer is not None else '?':10} {name}")
    for problem in problems:
        print(problem)
    print(
        f"{len(modules)} modules in {len(LAYERS)} layers, "
        f"{sum(len(d) for d in graph.values())} imports (deferred ones counted), "
        f"{len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
