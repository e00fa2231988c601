"""The package's imports point one way, and never in a circle.

    cli -> pipeline -> steps -> core -> engine -> foundation

Each module of deploytools has a layer (the table below). A module imports from its own layer or
a lower one, never a higher one, and no chain of imports comes back to where it started. Every
import counts, wherever it is written: at a module's top, under `if TYPE_CHECKING:`, inside a
function, or through importlib; so moving an import into a function hides nothing.

An import of deploytools through importlib with a written name is refused: a plain import says
the same to the reader. An import inside a function, or of deploytools under TYPE_CHECKING, is
allowed when it says why, on its line or in a comment just above it: start-up time
(`deploytools --help` loads neither the steps nor requests), an optional dependency.

The graph is read with `ast` from the source files, not by importing them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "deploytools"

#: The layers, highest first: a module may import from its own layer and those after it.
LAYERS = ("cli", "pipeline", "steps", "core", "engine", "foundation")

#: Where each module lives: a module, or a package and everything in it. The longest name that
#: matches wins. A new module that matches nothing fails `test_every_module_has_a_layer`: add
#: it here, in the layer whose rules it follows.
PLACES: dict[str, str] = {
    # cli: click commands; parse, call one step function, render, exit.
    "deploytools.__main__": "cli",
    "deploytools.cli": "cli",
    # pipeline: the walker that runs the runbook, resumable, calling the steps; its records.
    "deploytools.pipeline": "pipeline",
    # steps: one module per runbook step (and their own helpers).
    "deploytools.steps": "steps",
    # core: what every step stands on.
    "deploytools.session": "core",  # the environment session (config + target + store)
    "deploytools.store": "core",  # the state store: records, backups, locks
    "deploytools.config": "core",  # deploy.toml as frozen dataclasses
    "deploytools.context": "core",  # the step context (config, output, targets)
    "deploytools.deploy_windows": "core",  # deploy windows and freezes, read from config
    "deploytools.contacts": "core",
    "deploytools.redaction": "core",  # secret values kept out of what is printed
    # The runbook as data (its steps, gates, hand-overs; nothing here runs anything): the walker
    # walks it and the report step renders it, so it sits below both.
    "deploytools.pipeline.runbook": "core",
    "deploytools.checks": "core",  # the check engine: probes, statistics, metrics, logs
    "deploytools.platforms": "core",  # what an environment runs on, behind one interface
    "deploytools.target": "core",  # the Compose platform: one engine, one project
    "deploytools.database": "core",
    "deploytools.volumes": "core",
    "deploytools.copies": "core",
    "deploytools.proxy": "core",
    "deploytools.proxy_swarm": "core",  # deploytools' proxy in front of a Swarm service
    "deploytools.proxy_settings": "core",  # the proxy's settings: deploy.toml, then Compose
    "deploytools.github": "core",
    "deploytools.github_deployments": "core",
    "deploytools.migration_render": "core",  # Alembic run in the release image, confined
    "deploytools.migration_tree": "core",  # revision files read as text
    "deploytools.sql_lint": "core",  # the SQL rules: text in, findings out
    # engine: the only code that talks to the Docker engine or runs a program; argv builders.
    "deploytools.engine": "engine",
    "deploytools.commands": "engine",
    # foundation: what any layer may use, importing nothing above: the one error root, the
    # package's version, plain helpers for text, URLs and JSON.
    "deploytools.errors": "foundation",
    "deploytools.visible": "foundation",
    "deploytools.urls": "foundation",
    "deploytools.jsonable": "foundation",
    "deploytools.sizes": "foundation",
    "deploytools": "foundation",
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported deploytools module
    line: int
    hidden: str | None  # "in a function", "under TYPE_CHECKING", "by importlib", or None


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str:
    """The module that `name` (a module, or a name in one) is defined in."""
    while name not in known and "." in name:
        name = name.rpartition(".")[0]
    return name


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, hidden: str | None) -> Iterator[tuple[ast.AST, str | None]]:
    """Every node with how it is hidden from a reader of the module's top (None: it is not)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            inner = hidden or "in a function"
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            yield child.test, hidden
            for grand in child.body:
                yield grand, hidden or "under TYPE_CHECKING"
                yield from _walk(grand, hidden or "under TYPE_CHECKING")
            for grand in child.orelse:
                yield grand, hidden
                yield from _walk(grand, hidden)
            continue
        else:
            inner = hidden
        yield child, inner
        yield from _walk(child, inner)


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports_of(module: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node, hidden in _walk(tree, None):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(module, path).split(".")
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from deploytools.steps import backup` imports a module; `from x import NAME` a name.
            names = [f"{base}.{alias.name}" for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
            hidden = "by importlib"
        for name in names:
            if name == "deploytools" or name.startswith("deploytools."):
                target = _resolve(name, known)
                if target != module:
                    yield Import(module, target, getattr(node, "lineno", 0), hidden)


def _of_the_package(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == "deploytools" for a in node.names)
    return bool(node.level) or (node.module or "").split(".")[0] == "deploytools"


def graph() -> list[Import]:
    known = modules()
    return [i for m, p in known.items() for i in imports_of(m, p, known)]


def layer_of(module: str) -> str | None:
    # The package's root names itself only; every other entry names a package and its contents.
    matches = [
        k for k in PLACES if module == k or (k != "deploytools" and module.startswith(k + "."))
    ]
    return PLACES[max(matches, key=len)] if matches else None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as one
    circle through them (for the message)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                found.append(_circle(sorted(component), edges))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _circle(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A path from the component's first module back to itself, inside the component."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, ()) & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return component


def short(name: str) -> str:
    return name.removeprefix("deploytools.")


# -- the tests ------------------------------------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in modules() if layer_of(m) is None]
    assert not unplaced, f"modules with no layer (add them to PLACES): {unplaced}"


def test_no_import_circle() -> None:
    edges: dict[str, set[str]] = {}
    for imp in graph():
        edges.setdefault(imp.source, set()).add(imp.target)
    circles = [" -> ".join(short(m) for m in c) for c in cycles(edges)]
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_imports_point_down() -> None:
    upward = []
    for imp in graph():
        source, target = layer_of(imp.source), layer_of(imp.target)
        if source is None or target is None:
            continue  # test_every_module_has_a_layer says so
        if LAYERS.index(target) < LAYERS.index(source):
            upward.append(
                f"{short(imp.source)} ({source}) imports {short(imp.target)} ({target}), "
                f"line {imp.line}"
            )
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_a_package_init_imports_nothing_above_its_lowest_module() -> None:
    """Importing a module first runs its package's __init__: when a lower layer's module lives
    in a higher layer's package (pipeline/runbook.py, read by the report step), the package's
    __init__ must not pull the higher layer in behind it."""
    known = modules()
    too_high = []
    for package, path in known.items():
        if path.name != "__init__.py" or package == "deploytools":
            continue
        inside = [layer_of(m) for m in known if m.startswith(package + ".")]
        lowest = max((LAYERS.index(x) for x in inside if x is not None), default=None)
        if lowest is None:
            continue
        for imp in imports_of(package, path, known):
            target = layer_of(imp.target)
            if target is not None and LAYERS.index(target) < lowest:
                too_high.append(
                    f"{short(package)}/__init__ imports {short(imp.target)} ({target}); "
                    f"it holds {LAYERS[lowest]} modules"
                )
    assert not too_high, "package inits that import above their lowest module:\n" + "\n".join(
        too_high
    )


def test_no_import_of_the_package_through_importlib() -> None:
    hidden = sorted(
        {
            f"{short(i.source)} line {i.line}: {short(i.target)}"
            for i in graph()
            if i.hidden == "by importlib"
        }
    )
    assert not hidden, "deploytools modules imported through importlib:\n" + "\n".join(hidden)


def _says_why(lines: list[str], lineno: int) -> bool:
    """A comment on the import's line, or on the line above it or above the run of import lines
    (blank lines, `if TYPE_CHECKING:`) it belongs to."""
    if "#" in lines[lineno - 1]:
        return True
    above = lineno - 2
    while above >= 0 and (
        not lines[above].strip()
        or lines[above].strip().startswith(("import ", "from ", "if TYPE_CHECKING"))
    ):
        above -= 1
    return above >= 0 and lines[above].strip().startswith("#")


def test_an_import_not_at_the_top_says_why() -> None:
    unexplained = []
    for module, path in modules().items():
        text = path.read_text()
        lines = text.splitlines()
        for node, hidden in _walk(ast.parse(text), None):
            if hidden is None or not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if hidden == "under TYPE_CHECKING" and not _of_the_package(node):
                continue  # a library's types for annotations: nothing of ours is hidden
            if not _says_why(lines, node.lineno):
                unexplained.append(f"{short(module)} line {node.lineno}: {lines[node.lineno - 1]}")
    assert not unexplained, (
        "imports inside functions or under TYPE_CHECKING that do not say why:\n"
        + "\n".join(unexplained)
    )


# -- the reader itself ----------------------------------------------------------------------------

SAMPLE = """
from __future__ import annotations
from typing import TYPE_CHECKING
import deploytools.errors
from deploytools.steps import backup
from deploytools.config import Config
if TYPE_CHECKING:
    from deploytools.session import EnvSession
def f() -> None:
    from deploytools.steps.rollback import roll_back_in
    import importlib
    importlib.import_module("deploytools.cli.app")
"""


def test_the_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    known = {
        name: tmp_path
        for name in (
            "deploytools",
            "deploytools.errors",
            "deploytools.config",
            "deploytools.session",
            "deploytools.steps",
            "deploytools.steps.backup",
            "deploytools.steps.rollback",
            "deploytools.cli.app",
            "deploytools.sample",
        )
    }
    source = tmp_path / "sample.py"
    source.write_text(SAMPLE)
    found = {(i.target, i.hidden) for i in imports_of("deploytools.sample", source, known)}
    assert found == {
        ("deploytools.errors", None),
        ("deploytools.steps.backup", None),
        ("deploytools.config", None),
        ("deploytools.session", "under TYPE_CHECKING"),
        ("deploytools.steps.rollback", "in a function"),
        ("deploytools.cli.app", "by importlib"),
    }


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c", "a"]]),
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b", "a"], ["c", "d", "c"]]),
    ],
)
def test_circles_are_found(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert sorted(cycles(edges)) == expected


def test_the_most_specific_place_wins() -> None:
    assert layer_of("deploytools") == "foundation"
    assert layer_of("deploytools.steps.deploy") == "steps"
    assert layer_of("deploytools.pipeline.walker") == "pipeline"
    assert layer_of("deploytools.pipeline.runbook") == "core"
    assert layer_of("deploytools.store.records") == "core"
    assert layer_of("deploytools.nowhere") is None
