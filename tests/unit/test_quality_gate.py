"""The code-quality gate: ci.yml runs the suite and each static check as its own job
(scripts/quality: ruff, mypy, the security scan, pip-audit, the pre-commit hooks), and
.pre-commit-config.yaml's hooks are the venv's own tools, valid for pre-commit, with the
security scan clean today."""

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


QUALITY = ROOT / "scripts" / "quality"
CHECKS = ["lint", "types", "security-scan", "dependency-audit", "pre-commit"]


def test_ci_runs_the_suite_and_each_static_check_as_its_own_job() -> None:
    jobs = load(ROOT / ".github" / "workflows" / "ci.yml")["jobs"]
    assert "scripts/test" in runs(jobs["test"])
    quality = jobs["quality"]
    # One job per check: GitHub names each job's check after it, release verify lists them.
    assert quality["name"] == "${{ matrix.check }}"
    assert quality["strategy"]["matrix"]["check"] == CHECKS
    assert quality["strategy"]["fail-fast"] is False
    assert 'scripts/quality "$CHECK"' in runs(quality)
    # Read-only, like every job of this repository.
    assert all(job["permissions"] == {"contents": "read"} for job in jobs.values())


def test_the_quality_script_runs_what_each_check_names() -> None:
    script = QUALITY.read_text(encoding="utf-8")
    for needed in (
        '"$BIN/ruff" check .',
        '"$BIN/ruff" format --check .',
        '"$BIN/mypy"',
        '"$BIN/ruff" check --select S --ignore S603,S607 --no-fix deploytools',
        '"$BIN/pip-audit"',
        '"$BIN/pre-commit" run --all-files',
    ):
        assert needed in script, needed
    assert f"ALL=({' '.join(CHECKS)})" in script


def test_the_quality_script_refuses_an_unknown_check_before_running_any() -> None:
    result = subprocess.run(
        [str(QUALITY), "security-scan", "lnt"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert 'unknown check "lnt" (known: lint types security-scan' in result.stderr
    assert "== quality: security-scan" not in result.stdout


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
        [str(QUALITY), "security-scan"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "== quality: security-scan" in result.stdout
