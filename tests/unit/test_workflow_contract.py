"""The workflows hold to the pipeline and to the command line.

Parsed with PyYAML, nothing executed: every `deploytools` invocation in a `run:` block is a valid
command line of the CLI (parsed by click as it would be, without running); release.yml has one job
per step of deploytools/pipeline/runbook.py, in its order, each running that step's command;
production jobs use the production environments and exactly one job waits for approval.
"""

from __future__ import annotations

import itertools
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
from deploytools.config import base_url_variable

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
            # `exec deploytools ...`: the step's process is deploytools itself (a cancel's
            # SIGINT reaches it, not only the shell)
            line = line.strip().removeprefix("exec ")
            if not line.startswith("deploytools "):
                continue
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
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


# -- release.yml follows pipeline/runbook.py -------------------------------------------------------

#: The job that holds production from the backup to the verification and its rollback (one
#: concurrency span: nothing else changes production in between); its steps carry the
#: pipeline steps' names as ids. Every other step of pipeline/runbook.py is a job of its own.
PRODUCTION_JOB = "production"
PRODUCTION_SPAN = (
    "backup-production",
    "migrate-production",
    "deploy-production",
    "verify-production",
    pipeline.ROLLBACK.name,
)


def job_of(step_name: str) -> str:
    return PRODUCTION_JOB if step_name in PRODUCTION_SPAN else step_name


#: Read-only commands the jobs also run: what serves, the records (release_state.py reads them),
#: and the build's check of the image it pulled back from the registry.
READ_ONLY = ("status", "history", "image verify")


def read_only(argv: list[str]) -> bool:
    return argv[0] in READ_ONLY or " ".join(argv[:2]) in READ_ONLY


def runs_of(step_name: str) -> list[list[str]]:
    """The deploytools command lines that run `step_name` in release.yml (not the read-only
    ones around it)."""
    job = JOBS[step_name] if step_name not in PRODUCTION_SPAN else JOBS[PRODUCTION_JOB]
    if step_name in PRODUCTION_SPAN:
        steps = [s for s in job["steps"] if s.get("id") == step_name]
        assert len(steps) == 1, f"{PRODUCTION_JOB} has no step with id {step_name}"
        job = {"steps": steps}
    found = [without_global_options(a) for a in invocations(job)]
    return [a for a in found if not read_only(a)]


def test_one_job_or_production_step_per_pipeline_step_and_rollback() -> None:
    for step in (*pipeline.STEPS, pipeline.ROLLBACK):
        assert job_of(step.name) in JOBS, f"release.yml has no job {job_of(step.name)}"
        assert runs_of(step.name), step.name
    ids = [s.get("id") for s in JOBS[PRODUCTION_JOB]["steps"] if s.get("id") in PRODUCTION_SPAN]
    assert ids == list(PRODUCTION_SPAN), "the production job runs the steps in pipeline order"


@pytest.mark.parametrize("step", [*pipeline.STEPS, pipeline.ROLLBACK], ids=lambda s: s.name)
def test_each_step_runs_its_command(step: pipeline.Step) -> None:
    found = runs_of(step.name)
    values = {"tag": "$TAG", "version": "$VERSION", "revision": "$GITHUB_SHA", "image": "$IMAGE"}
    expected = step.argv(values)
    if step is pipeline.ROLLBACK:
        # The workflow names the release it replaced: a re-run never rolls back one too far.
        expected = [*expected[:-1], "--to", "$PREVIOUS", expected[-1]]
    assert found == [expected], f"{step.name}: runs {found}, pipeline/runbook.py says {expected}"


def test_the_job_graph_follows_the_pipeline_order() -> None:
    jobs = list(dict.fromkeys(job_of(s.name) for s in pipeline.STEPS))
    for earlier, later in itertools.pairwise(jobs):
        assert earlier in needs(later), f"{later} does not wait for {earlier}"
    # And nothing of the pipeline waits for a job that comes after it.
    for i, name in enumerate(jobs):
        assert not needs(name) & set(jobs[i:]), name


def test_rollback_runs_only_when_its_steps_failed() -> None:
    job = JOBS[PRODUCTION_JOB]
    (rollback,) = (s for s in job["steps"] if s.get("id") == pipeline.ROLLBACK.name)
    condition = str(rollback["if"])
    for name in pipeline.ROLLBACK_WHEN_FAILED:
        assert f"steps.{name}.outcome == 'failure'" in condition
    assert "failure()" in condition  # else the failed step would skip it
    # to the release this run replaced, read before anything changed production
    ids = [s.get("id") for s in job["steps"]]
    assert ids.index("previous") < ids.index("backup-production")
    assert rollback["env"]["PREVIOUS"] == "${{ steps.previous.outputs.release }}"


def test_every_job_after_the_build_uses_its_digest_never_a_tag() -> None:
    build = JOBS["build-image"]
    assert build["outputs"]["digest"] == "${{ steps.build.outputs.digest }}"
    assert build["outputs"]["image"] == "${{ steps.build.outputs.image }}"
    assert any("attest-build-provenance" in str(s.get("uses", "")) for s in build["steps"])
    for step in pipeline.STEPS:
        if "image" in step.needs and step.name != "build-image":
            job = JOBS[job_of(step.name)]
            assert job["env"]["IMAGE"] == "${{ needs.build-image.outputs.image }}", step.name
            assert "build-image" in needs(job_of(step.name))


def test_the_build_is_deploytools_and_verifies_the_pushed_manifest_by_its_digest() -> None:
    """`image build --push` builds from the tag, lints the migrations inside the image and
    labels it with the verdict (deploy --strategy auto reads it), pushes it and prints the
    pushed manifest's digest; `image verify` checks `repository@digest` pulled back from the
    registry, not a local copy."""
    build = JOBS["build-image"]
    uses = " ".join(str(s.get("uses", "")) for s in build["steps"])
    assert "build-push-action" not in uses and "metadata-action" not in uses
    (pushing,) = (s for s in build["steps"] if s.get("id") == "build")
    assert 'deploytools image build --tag "$TAG" --push' in pushing["run"]
    # the tags: the previous release's head is where the migration lint starts
    (checkout,) = (s for s in build["steps"] if "actions/checkout@" in str(s.get("uses", "")))
    assert checkout["with"]["fetch-depth"] == 0
    names = [s.get("name", s.get("uses", "")) for s in build["steps"]]
    pull = names.index("pull the pushed manifest by its digest")
    verify = names.index("verify the image (labels, version, revision)")
    assert names.index("build the image from the tag, lint its migrations, push it") < pull
    assert pull < verify
    for index in (pull, verify):
        assert build["steps"][index]["env"]["IMAGE"] == "${{ steps.build.outputs.image }}"
    assert build["steps"][pull]["run"] == 'docker pull "$IMAGE"'


def test_a_production_recreate_announces_its_own_maintenance_window() -> None:
    """deploy announces the window when it recreates (steps/maintenance.py), and only then: no
    job of its own announces one for a deploy that rolls."""
    assert "notify-maintenance" not in JOBS
    (deploy,) = (s for s in JOBS[PRODUCTION_JOB]["steps"] if s.get("id") == "deploy-production")
    for hook in ("SLACK_WEBHOOK_URL", "STATUS_PAGE_HOOK_URL"):
        assert deploy["env"][hook] == "${{ secrets." + hook + " }}"


def test_what_serves_is_checked_after_every_production_change() -> None:
    check = "release_state.py serving"
    steps = JOBS[PRODUCTION_JOB]["steps"]
    ids = [s.get("id") for s in steps]
    after_deploy = steps[ids.index("deploy-production") + 1]
    assert check in after_deploy["run"] and '"$IMAGE"' in after_deploy["run"]
    after_rollback = steps[ids.index(pipeline.ROLLBACK.name) + 1]
    assert check in after_rollback["run"] and "rollback-production.outcome" in after_rollback["if"]
    monitor = [str(s.get("run", "")) for s in JOBS["monitor-production"]["steps"]]
    assert any(check in r for r in monitor)


# -- Environments, the one approval, secrets, concurrency --------------------------------------


def test_exactly_one_job_waits_for_approval_and_it_is_the_gate() -> None:
    waiting = [j for j, job in JOBS.items() if environment_of(job) == APPROVAL_ENVIRONMENT]
    assert waiting == [pipeline.approval_gate().name]


#: Environments without reviewers that hold one kind of secret each: the release-verify token,
#: the notification hooks.
SECRET_ENVIRONMENTS = {"verify-release": "release-verify"}
NOTIFYING_JOBS = ("notify-outcome",)


def test_production_jobs_use_the_production_environments() -> None:
    gate = pipeline.approval_gate()
    for step in (*pipeline.STEPS, pipeline.ROLLBACK):
        job_id = job_of(step.name)
        env = environment_of(JOBS[job_id])
        if step.approval:
            assert env == APPROVAL_ENVIRONMENT
        elif step.production:
            assert env == PRODUCTION_DEPLOY_ENVIRONMENT, step.name
            assert gate.name in needs(job_id), f"{step.name} runs without the approval"
        elif step.environment is not None:
            assert env == step.environment, step.name
        else:
            assert env == SECRET_ENVIRONMENTS.get(step.name), step.name
    # Whatever else reaches production's secrets waits for the approval too.
    for job_id, job in JOBS.items():
        if environment_of(job) == PRODUCTION_DEPLOY_ENVIRONMENT:
            assert gate.name in needs(job_id), job_id


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_every_secret_is_an_environments(name: str) -> None:
    """zizmor's auditor persona (secrets-outside-env): a repository secret reaches every job
    of every branch; an environment's reaches only the jobs its rules admit."""
    for job_id, job in WORKFLOWS[name]["jobs"].items():
        if "secrets." in str(job.get("steps")):
            assert environment_of(job), f"{name}:{job_id} reads secrets outside an environment"
    for job_id in NOTIFYING_JOBS:
        assert environment_of(JOBS[job_id]) == "notifications", job_id


def test_production_changes_run_in_one_span_and_are_never_cancelled() -> None:
    """Backup to verification and its rollback: one job, so rollback.yml (same group) cannot
    run between migrate and deploy; never cancelled half-way."""
    concurrency = JOBS[PRODUCTION_JOB]["concurrency"]
    assert concurrency == {"group": "production", "cancel-in-progress": False}
    grouped = [j for j, job in JOBS.items() if "concurrency" in job]
    assert grouped == [PRODUCTION_JOB]
    rollback = WORKFLOWS["rollback.yml"]["jobs"]["rollback"]["concurrency"]
    assert rollback["group"] == "${{ inputs.environment }}"  # "production" for production
    assert rollback["cancel-in-progress"] is False
    assert RELEASE["concurrency"]["cancel-in-progress"] is False
    # One release at a time: a release's production job never queues behind another's (and
    # so never replaces a rollback waiting in the group).
    assert RELEASE["concurrency"]["group"] == "release"


def test_no_output_is_written_into_the_work_tree() -> None:
    """A file written next to the checkout (`| tee x.json`) makes release verify's
    work-tree-clean check fail, and is uploaded from wherever the job's directory is."""
    for name, workflow in WORKFLOWS.items():
        for job_id, job in workflow["jobs"].items():
            for step in job["steps"]:
                run = str(step.get("run", ""))
                for target in re.findall(r"(?:tee|>)\s+(\"?[^\s|;&]+)", run):
                    target = target.strip('"')
                    if target in ("/dev/null", "&2") or target.startswith("&"):
                        continue
                    assert target.startswith(("$RUNNER_TEMP/", "$GITHUB_OUTPUT", "~/")), (
                        f"{name}:{job_id} writes {target}"
                    )
                path = str((step.get("with") or {}).get("path", "${{ runner.temp }}"))
                assert path.startswith("${{ runner.temp }}"), f"{name}:{job_id} path {path}"


#: What a production job's steps may run in a shell, around deploytools: reads of the records.
PRODUCTION_READS = ("status", "history", "report")


@pytest.mark.parametrize("job_id", [PRODUCTION_JOB, "monitor-production"])
def test_steps_on_production_are_deploytools_itself_so_a_cancel_reaches_it(job_id: str) -> None:
    """On a cancel GitHub sends SIGINT to the step's process, SIGTERM 7.5 s later, then kills
    it. A shell waiting for a pipeline (`deploytools ... | tee`) passes neither signal on, so
    deploytools is killed holding the deploy lock, or in the middle of a rollback on a breach.
    Every step that changes or watches production is `exec deploytools ...`, its JSON
    redirected to a file, never piped."""
    for step in JOBS[job_id]["steps"]:
        run = str(step.get("run", ""))
        for argv in invocations({"steps": [step]}):
            if without_global_options(argv)[0] in PRODUCTION_READS:
                continue
            assert run.startswith("exec deploytools "), (job_id, run)
            assert "\n" not in run.strip() and "|" not in run, (job_id, run)


def test_release_verify_reads_the_annotated_tag_not_checkouts_copy() -> None:
    steps = JOBS["verify-release"]["steps"]
    names = [s.get("name", s.get("uses", "")) for s in steps]
    fetch = steps[names.index("fetch the annotated tag itself")]
    assert 'fetch --no-tags --force origin "refs/tags/$TAG:refs/tags/$TAG"' in fetch["run"]
    # checkout keeps no credentials: the fetch gets the token for itself
    assert fetch["env"]["FETCH_TOKEN"] == "${{ github.token }}"
    assert "http.extraheader=AUTHORIZATION: basic" in fetch["run"]
    assert names.index("fetch the annotated tag itself") < names.index("verify the release tag")


def test_the_outcome_names_the_environment_that_failed() -> None:
    job = JOBS["notify-outcome"]
    assert job["if"] == "${{ !cancelled() }}"  # a cancelled run tells no one a failure
    assert {"production", "monitor-production", "smoke-staging"} <= set(job["needs"])
    (tell,) = (s for s in job["steps"] if s.get("name") == "tell the team")
    run = tell["run"]
    # production's failure only when production's jobs failed; staging's as staging's
    assert '[ "$PRODUCTION" = failure ] || [ "$MONITOR" = failure ]' in run
    assert 'STATUS_PAGE_HOOK_URL="" deploytools notify --event failure --env staging' in run
    assert run.count("--env production") == 4
    # a re-run refused (its tag rolled back before): Slack only, the tag's deployment as it was
    assert 'STATUS_PAGE_HOOK_URL="" GITHUB_TOKEN="" deploytools notify --event failure' in run
    assert "else\n" in run and "nothing to tell" in run


def test_the_scheduled_watch_is_bounded_and_fork_safe() -> None:
    monitor = WORKFLOWS["monitor.yml"]
    due = monitor["jobs"]["due"]
    assert "environment" not in due and "secrets." not in str(due)
    assert "watch_due.py" in str(due["steps"])
    watch = monitor["jobs"]["monitor"]
    assert watch["needs"] == ["due"]
    assert watch["if"] == "${{ needs.due.outputs.due == 'true' }}"
    runs = " ".join(str(s.get("run", "")) for s in watch["steps"])
    assert "--only-after-release 24h" in runs and "--rollback-on-breach" not in runs


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_least_privilege_and_no_persisted_credentials(name: str) -> None:
    workflow = WORKFLOWS[name]
    assert workflow["permissions"] == {}
    for job_id, job in workflow["jobs"].items():
        assert "permissions" in job, f"{name}:{job_id} has no permissions of its own"
        writes = {k for k, v in job["permissions"].items() if v == "write"}
        allowed = {
            "build-image": {"packages", "id-token", "attestations"},
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


def test_checks_reach_the_environments_url_not_deploy_tomls() -> None:
    """deploy.toml's base_url (127.0.0.1) is for local runs; on a hosted runner every HTTP
    check would reach the runner itself. Each job reaching an engine takes the GitHub
    environment's BASE_URL (config.base_url_variable)."""
    for name, workflow in WORKFLOWS.items():
        for job_id, job in workflow["jobs"].items():
            env = job.get("env", {})
            if "DOCKER_HOST" not in env:
                continue
            urls = {k: v for k, v in env.items() if k.endswith("_BASE_URL")}
            assert urls, f"{name}:{job_id}"
            target = environment_of(job)
            for variable, value in urls.items():
                assert value == "${{ vars.BASE_URL }}", f"{name}:{job_id}"
                if target in ("staging", "production"):
                    assert variable == base_url_variable(target)
                if target == PRODUCTION_DEPLOY_ENVIRONMENT:
                    assert variable == base_url_variable("production")
