"""The engine boundary: only `deploytools/engine/` imports the docker SDK or `subprocess`, and
importing the CLI does not load the docker SDK (it loads when an engine is first connected)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "deploytools"
ENGINE = PACKAGE / "engine"
#: Top-level modules that only the engine may import.
ENGINE_ONLY = ("docker", "subprocess")


def imported_modules(source: str) -> list[tuple[int, str]]:
    """Every module an `import` or `from ... import` names, anywhere in the file (inside
    functions and TYPE_CHECKING blocks too), with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def forbidden_imports(path: Path) -> list[str]:
    return [
        f"{path.relative_to(PACKAGE.parent)}:{line}: imports {module}"
        for line, module in imported_modules(path.read_text(encoding="utf-8"))
        if module.split(".")[0] in ENGINE_ONLY
    ]


def test_the_finder_sees_every_form_of_import() -> None:
    source = (
        "import docker\nimport docker.errors as e\nfrom docker.utils import socket\n"
        "import os, subprocess\ndef f():\n    from subprocess import run\n"
        "from deploytools.engine import process\n"
    )
    top = [m.split(".")[0] for _, m in imported_modules(source)]
    assert top.count("docker") == 3 and top.count("subprocess") == 2


def test_only_the_engine_imports_the_docker_sdk_or_subprocess() -> None:
    modules = [p for p in PACKAGE.rglob("*.py") if ENGINE not in p.parents]
    assert len(modules) > 40  # the whole package was read, not an empty glob
    offenders = [line for path in sorted(modules) for line in forbidden_imports(path)]
    assert offenders == []


def test_the_engine_imports_the_docker_sdk_only_inside_functions() -> None:
    """At module level the engine imports no docker module (TYPE_CHECKING aside), so
    importing it costs nothing until an engine is connected."""
    offenders = []
    for path in sorted(ENGINE.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "docker"]
    assert offenders == []


def test_importing_the_cli_does_not_load_the_docker_sdk() -> None:
    probe = (
        "import sys, deploytools.cli, deploytools.engine, deploytools.target\n"
        "print(sorted(m for m in sys.modules if m == 'docker' or m.startswith('docker.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
