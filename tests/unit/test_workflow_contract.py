"""The workflows hold to the pipeline and to the command line.

Parsed with PyYAML, nothing executed: every `deploytools` invocation in a `run:` block is a valid
command line of the CLI (parsed by click as it would be, without running); release.yml has one job
per step of deploytools/pipeline.py, in its order, each running that step's command; production
jobs use the production environments and exactly one job waits for approval.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from deploytools import pipeline
from deploytools.cli import cli

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = ROOT / ".github" / "workflows"

#: The environment with required reviewers, and the one holding production's secrets that the
#: jobs after the approval use (docs/workflows.md).
APPROVAL_ENVIRONMENT = "production"
PRODUCTION_DEPLOY_ENVIRONMENT = "production-deploy"

#: Commands the workflows call that other issues are still adding to the CLI (the issue that
#: adds each). The test fails once one exists but is still listed, so the list only shrinks.
PENDING_COMMANDS: dict[str, int] = {}

#: Sample values for the shell variables of the run blocks, to parse the command lines with.
SAMPLES = {
    "TAG": "v1.15.2",
    "IMAGE": "ghcr.io/example/rbac-api@sha256:" + "0" * 64,
    "TARGET_ENV": "production",
    "VERSION": "1.15.1",
    "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
    "EVENT": "success",
    "RUN_URL": "https://github.com/example/rbac-api/actions/runs/1",
}
_SHELL_END = {"|", "||", "&&", ";", ">", ">>", "<", "&"}


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOW_DIR / name).read_text())
    assert isinstance(data, dict)
    # YAML 1.1 reads the key `on` as True.
    if True in data:
        data["on"] = data.pop(True)
    return data


WORKFLOWS = {p.name: load(p.name) for p in sorted(WORKFLOW_DIR.glob("*.yml"))}
RELEASE = WORKFLOWS["release.yml"]
JOBS: dict[str, Any] = RELEASE["jobs"]


def invocations(job: dict[str, Any]) -> Iterator[list[str]]:
    """The `deploytools` command lines of a job's run blocks, as argv (without the program)."""
    for step in job.get("steps", []):
        for line in str(step.get("run", "")).splitlines():
            if not line.strip().startswith("deploytools "):
                continue
            lexer = shlex.shlex(line.strip(), posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            words: list[str] = []
            for word in lexer:
                if word in _SHELL_END:
                    break
                words.append(word)
            yield words[1:]


def all_invocations() -> Iterator[tuple[str, str, list[str]]]:
    for name, workflow in WORKFLOWS.items():
        for job_id, job in workflow["jobs"].items():
            for argv in invocations(job):
                yield name, job_id, argv


def substitute(argv: list[str]) -> list[str]:
    def value(match: re.Match[str]) -> str:
        return SAMPLES.get(match.group(1), "sample")

    return [re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", value, word) for word in argv]


def parse_command_line(argv: list[str]) -> list[str]:
    """Parse `argv` the way `deploytools` would, down to the leaf command; run nothing.

    Returns the command path (["backup", "create"]); raises click's UsageError when invalid.
    """
    ctx = cli.make_context("deploytools", list(argv))
    command: click.Command = cli
    path: list[str] = []
    while isinstance(command, click.Group):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, sub, args = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        path.append(name)
        ctx = sub.make_context(name, args, parent=ctx)
        command = sub
    return path


def without_global_options(argv: list[str]) -> list[str]:
    return [w for w in argv if w != "--json"]


def needs(job_id: str, jobs: dict[str, Any] = JOBS) -> set[str]:
    """Every job `job_id` waits for, directly or not."""
    direct = jobs[job_id].get("needs", [])
    direct = [direct] if isinstance(direct, str) else list(direct)
    found = set(direct)
    for other in direct:
        found |= needs(other, jobs)
    return found


def environment_of(job: dict[str, Any]) -> str | None:
    env = job.get("environment")
    if isinstance(env, dict):
        return str(env["name"])
    return None if env is None else str(env)


# -- Every command line is one the CLI accepts -------------------------------------------------


def test_the_workflows_call_deploytools() -> None:
    assert len(list(all_invocations())) >= len(pipeline.STEPS) + 5


@pytest.mark.parametrize(
    "where, argv",
    [((f"{w}:{j}"), argv) for w, j, argv in all_invocations()],
    ids=lambda v: v if isinstance(v, str) else " ".join(v),
)
def test_every_invocation_is_a_valid_command_line(where: str, argv: list[str]) -> None:
    command = without_global_options(argv)[0]
    if command in PENDING_COMMANDS and command not in cli.commands:
        # Not yet in the CLI: its issue adds it, with the options the pipeline data names.
        return
    path = parse_command_line(substitute(argv))
    assert path[0] == command, where


def test_pending_commands_are_still_pending() -> None:
    arrived = sorted(c for c in PENDING_COMMANDS if c in cli.commands)
    assert not arrived, f"now in the CLI, remove from PENDING_COMMANDS: {arrived}"


def test_an_invalid_command_line_is_caught() -> None:
    # The parser used above fails on what the CLI would refuse (so the test above can fail).
    with pytest.raises(click.UsageError):
        parse_command_line(["backup", "create", "--no-such-option"])
    with pytest.raises(click.UsageError):
        parse_command_line(["no-such-command"])
    assert parse_command_line(["--json", "backup", "create", "--env", "production"]) == [
        "backup",
        "create",
    ]


# -- release.yml follows pipeline.py -----------------------------------------------------------


def test_one_job_per_pipeline_step_and_rollback() -> None:
    for step in (*pipeline.STEPS, pipeline.ROLLBACK):
        assert step.name in JOBS, f"release.yml has no job {step.name}"


@pytest.mark.parametrize("step", [*pipeline.STEPS, pipeline.ROLLBACK], ids=lambda s: s.name)
def test_each_step_job_runs_its_command(step: pipeline.Step) -> None:
    found = [without_global_options(argv) for argv in invocations(JOBS[step.name])]
    values = {"tag": "$TAG", "version": "$VERSION", "revision": "$GITHUB_SHA", "image": "$IMAGE"}
    expected = step.argv(values, workflow=True)
    assert found == [expected], f"{step.name}: runs {found}, pipeline.py says {expected}"


def test_the_job_graph_follows_the_pipeline_order() -> None:
    for earlier, later in zip(pipeline.STEPS, pipeline.STEPS[1:], strict=False):
        assert earlier.name in needs(later.name), f"{later.name} does not wait for {earlier.name}"
    # And nothing of the pipeline waits for a step that comes after it.
    order = [s.name for s in pipeline.STEPS]
    for i, name in enumerate(order):
        assert not needs(name) & set(order[i:]), name


def test_rollback_runs_only_when_its_steps_failed() -> None:
    job = JOBS[pipeline.ROLLBACK.name]
    assert set(pipeline.ROLLBACK_WHEN_FAILED) <= needs(pipeline.ROLLBACK.name)
    condition = str(job["if"])
    for name in pipeline.ROLLBACK_WHEN_FAILED:
        assert f"needs.{name}.result == 'failure'" in condition
    assert "always()" in condition  # else a failed need would skip it


def test_every_job_after_the_build_uses_its_digest_never_a_tag() -> None:
    build = JOBS["build-image"]
    assert build["outputs"]["digest"] == "${{ steps.build.outputs.digest }}"
    pushing = next(s for s in build["steps"] if s.get("id") == "build")
    assert "push-by-digest=true" in pushing["with"]["outputs"]
    assert any("attest-build-provenance" in str(s.get("uses", "")) for s in build["steps"])
    for step in pipeline.STEPS:
        if "image" in step.needs and step.name != "build-image":
            job = JOBS[step.name]
            assert job["env"]["IMAGE"] == "${{ needs.build-image.outputs.image }}", step.name
            assert "build-image" in needs(step.name)


# -- Environments, the one approval, secrets, concurrency --------------------------------------


def test_exactly_one_job_waits_for_approval_and_it_is_the_gate() -> None:
    waiting = [j for j, job in JOBS.items() if environment_of(job) == APPROVAL_ENVIRONMENT]
    assert waiting == [pipeline.approval_gate().name]


def test_production_jobs_use_the_production_environments() -> None:
    gate = pipeline.approval_gate()
    for step in (*pipeline.STEPS, pipeline.ROLLBACK):
        env = environment_of(JOBS[step.name])
        if step.approval:
            assert env == APPROVAL_ENVIRONMENT
        elif step.production:
            assert env == PRODUCTION_DEPLOY_ENVIRONMENT, step.name
            assert gate.name in needs(step.name), f"{step.name} runs without the approval"
        elif step.environment is not None:
            assert env == step.environment, step.name
        else:
            assert env is None, step.name
    # Whatever else reaches production's secrets waits for the approval too.
    for job_id, job in JOBS.items():
        if environment_of(job) == PRODUCTION_DEPLOY_ENVIRONMENT:
            assert gate.name in needs(job_id), job_id


def test_production_changes_run_one_at_a_time_and_are_never_cancelled() -> None:
    changing = ["backup-production", "migrate-production", "deploy-production"]
    for job_id in [*changing, "verify-production", pipeline.ROLLBACK.name]:
        concurrency = JOBS[job_id]["concurrency"]
        assert concurrency == {"group": "production", "cancel-in-progress": False}, job_id
    rollback = WORKFLOWS["rollback.yml"]["jobs"]["rollback"]["concurrency"]
    assert rollback["group"] == "${{ inputs.environment }}"  # "production" for production
    assert rollback["cancel-in-progress"] is False
    assert RELEASE["concurrency"]["cancel-in-progress"] is False


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_least_privilege_and_no_persisted_credentials(name: str) -> None:
    workflow = WORKFLOWS[name]
    assert workflow["permissions"] == {}
    for job_id, job in workflow["jobs"].items():
        assert "permissions" in job, f"{name}:{job_id} has no permissions of its own"
        writes = {k for k, v in job["permissions"].items() if v == "write"}
        allowed = {
            "build-image": {"packages", "id-token", "attestations"},
            "notify-maintenance": {"deployments"},
            "notify-outcome": {"deployments"},
        }.get(job_id, set())
        assert writes <= allowed, f"{name}:{job_id} writes {writes - allowed}"
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, f"{name}:{job_id}"


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_secrets_only_in_the_steps_that_use_them(name: str) -> None:
    workflow = WORKFLOWS[name]
    assert "secrets." not in str(workflow.get("env", {}))
    for job_id, job in workflow["jobs"].items():
        assert "secrets." not in str(job.get("env", {})), f"{name}:{job_id} job-wide secret"
        for step in job["steps"]:
            for var, value in (step.get("env") or {}).items():
                if "secrets." in str(value) and step.get("run"):
                    # The step's command reads it, by name: its run block or deploytools.
                    run = str(step["run"])
                    assert f"${var}" in run or "deploytools " in run, f"{name}:{job_id}:{var}"


def test_remote_engines_are_reached_over_ssh_with_pinned_host_keys() -> None:
    for name, workflow in WORKFLOWS.items():
        for job_id, job in workflow["jobs"].items():
            if "DOCKER_HOST" not in job.get("env", {}):
                continue
            runs = "\n".join(str(s.get("run", "")) for s in job["steps"])
            assert "known_hosts" in runs and "StrictHostKeyChecking yes" in runs, f"{name}:{job_id}"


def test_release_runs_on_version_tags_only() -> None:
    assert RELEASE["on"] == {"push": {"tags": ["v*.*.*"]}}
    rollback = WORKFLOWS["rollback.yml"]["on"]["workflow_dispatch"]["inputs"]
    assert set(rollback) == {"environment", "version", "restore-db"}
    assert "schedule" in WORKFLOWS["monitor.yml"]["on"]
    assert set(WORKFLOWS["ci.yml"]["on"]) == {"pull_request", "push"}


def test_ci_runs_the_test_script() -> None:
    runs = [s.get("run") for s in WORKFLOWS["ci.yml"]["jobs"]["test"]["steps"]]
    assert "scripts/test" in runs
    assert os.access(ROOT / "scripts" / "test", os.X_OK)
