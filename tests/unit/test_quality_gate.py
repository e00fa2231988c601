"""The code-quality gate: ci.yml runs the suite and each static check on its own (ruff, mypy,
the security scan, pip-audit, the pre-commit hooks), and .pre-commit-config.yaml's hooks are the
venv's own tools, valid for pre-commit, with the security scan clean today."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def runs(job: dict[str, Any]) -> list[str]:
    return [str(step.get("run", "")) for step in job["steps"]]


def test_ci_runs_the_suite_and_every_static_check() -> None:
    jobs = load(ROOT / ".github" / "workflows" / "ci.yml")["jobs"]
    commands = "\n".join(run for job in jobs.values() for run in runs(job))
    assert "scripts/test" in commands
    for needed in (
        ".venv/bin/ruff check .",
        ".venv/bin/ruff format --check .",
        ".venv/bin/mypy",
        ".venv/bin/ruff check --select S --ignore S603,S607 --no-fix deploytools",
        ".venv/bin/pip-audit",
        ".venv/bin/pre-commit run --all-files",
    ):
        assert needed in commands, needed
    # Read-only, like every job of this repository.
    assert all(job["permissions"] == {"contents": "read"} for job in jobs.values())


def test_pre_commit_hooks_are_the_venvs_tools_and_cover_the_gate() -> None:
    config = load(ROOT / ".pre-commit-config.yaml")
    hooks = {h["id"]: h for repo in config["repos"] for h in repo["hooks"]}
    assert set(hooks) >= {
        "ruff",
        "ruff-format",
        "mypy",
        "actionlint",
        "zizmor",
        "check-github-workflows",
        "deploy-toml",
    }
    for hook in hooks.values():
        program = shlex.split(hook["entry"])[0]
        assert program.startswith(".venv/bin/"), hook["id"]
        assert (BIN / Path(program).name).exists(), f"{hook['id']}: {program} is not installed"


def test_pre_commit_accepts_the_config() -> None:
    result = subprocess.run(
        [str(BIN / "pre-commit"), "validate-config", ".pre-commit-config.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_security_scan_of_the_package_is_clean() -> None:
    result = subprocess.run(
        [str(BIN / "ruff"), "check", "--select", "S", "--ignore", "S603,S607", "--no-fix",
         "deploytools"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
