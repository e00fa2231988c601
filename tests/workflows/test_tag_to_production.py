"""Pushed tags through the whole of release.yml, to production, on one production in turn.

(a) v1.16.1: every job, production among them; production serves the build's digest (pulled
    here from the registry by digest and compared with what runs); success told to Slack and
    the status page; the runbook report.
(e) v1.16.2, cancelled during deploy-production as GitHub cancels a job: SIGINT to the step's
    process, SIGTERM 7.5 s later, then the process tree killed; nothing after it runs. No lock
    is left behind and production serves one whole release.
(c) v1.16.3: it proceeds without anyone breaking a lock; verify-production fails (production's
    viewer lost its role behind the checks' back), so production goes back `--to` the release
    this run replaced; a rollback notice, the incident report artifact, no success.
(d) "re-run failed jobs" of (c)'s run (see `rerun_workflow`): nothing goes one release too
    far, nothing is deployed again, no success is told for the rolled-back tag.

The scenarios share one production, one staging, the registry and the runs' order (each
starts where the one before left production); each image is built once, by its run.

How GitHub is emulated where act differs (docs/workflows.md, "Testing the workflows"):
- The approval: act runs a job naming an environment without waiting for its reviewers (it
  has no reviewers to ask); approve-production runs at once. The gate itself is GitHub's and
  is not exercised here; the contract test (unit tier) holds that exactly one job waits for
  it and every later job needs it.
- The hour-long watch: act runs a copy of release.yml whose one difference is monitor's
  `--duration 1h` shortened to 10 s (sampled every 5 s).
- A re-run of failed jobs: act cannot re-run a run. GitHub re-runs the failed jobs and the
  jobs that need them, within the same run: the jobs that succeeded keep their results and
  outputs, and the run's artifacts stay. act runs a copy of the workflow in which each job
  that succeeded is a stand-in job of the same id, needs and outputs (the values it output
  in the first attempt); the re-run jobs are release.yml's own, and the artifact directory
  is the first attempt's.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from deploytools.config import load_config
from tests.fakes.github_server import FakeGitHub
from tests.fakes.webhook_server import FakeWebhooks
from tests.workflows.conftest import PREFIX, REPOSITORY, ROOT, Act, ActRun, ServiceImages

pytestmark = pytest.mark.workflows

_PASSWORD = "dtwf-" + secrets.token_hex(12)
SECRETS = {
    # the same as the other modules': the stacks' database volumes are shared
    "POSTGRES_PASSWORD": "dtwf-postgres-password-1234",
    "APP_SECRET_KEY": "dtwf-app-secret-key-0123456789abcdef",
    "ADMIN_USERNAME": "dtwf-release-admin",
    "ADMIN_PASSWORD": _PASSWORD + "-admin",
    "CHECK_EDITOR_USERNAME": "dtwf-release-editor",
    "CHECK_EDITOR_PASSWORD": _PASSWORD + "-editor",
    "CHECK_VIEWER_USERNAME": "dtwf-release-viewer",
    "CHECK_VIEWER_PASSWORD": _PASSWORD + "-viewer",
}
ALL_JOBS = {
    "verify release", "build image", "deploy staging", "smoke staging", "validate staging",
    "approve production", "production", "monitor production",
    "report production", "notify outcome",
}  # fmt: skip
#: Production's check viewer loses its role, and gets it back.
REVOKE_VIEWER = (
    "DELETE FROM user_roles WHERE user_id = "
    "(SELECT id FROM users WHERE username = 'dtwf-release-viewer')"
)
GRANT_VIEWER = (
    "INSERT INTO user_roles (user_id, role_id) SELECT u.id, r.id FROM users u, roles r "
    "WHERE u.username = 'dtwf-release-viewer' AND r.name = 'viewer'"
)
#: How a success notice says it (steps/notify.py).
SUCCESS = "is deployed and verified"
WATCH = ("--duration 1h --rollback-on-breach", "--duration 10s --interval 5s --rollback-on-breach")


def deploytools(act: Act, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "deploytools", "--config", "deploy.toml", *argv],
        cwd=act.git_server.work, env={**os.environ, **SECRETS},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert not check or done.returncode == 0, done.stdout + done.stderr
    return done


def result(act: Act, *argv: str) -> Any:
    return json.loads(deploytools(act, "--json", *argv).stdout)["result"]


def _containers(environment: str, service: str) -> list[str]:
    """The names of the environment's running containers of `service`."""
    listing = [
        "docker", "ps", "--format", "{{.Names}}",
        "--filter", f"label=com.docker.compose.project={PREFIX}-{environment}",
        "--filter", f"label=com.docker.compose.service={service}",
    ]  # fmt: skip
    return subprocess.run(listing, capture_output=True, text=True, check=True).stdout.split()


def _app_image_ids(environment: str) -> list[str]:
    """The image ids the environment's app containers run (whether serving or not)."""
    names = _containers(environment, "app")
    if not names:
        return []
    inspect = ["docker", "inspect", "--format", "{{.Image}}", *names]
    done = subprocess.run(inspect, capture_output=True, text=True, check=False)
    return done.stdout.split()


def kept(act: Act, environment: str) -> str | None:
    """The previous release's container a rolling deploy keeps up, drained and taking no
    traffic, during the watch (steps/watch_keep.py), when it runs: `status` names it."""
    found = result(act, "status", "--env", environment).get("kept") or {}
    return str(found["container"]) if found.get("state") == "running" else None


def image_id(reference: str) -> str:
    inspect = ["docker", "image", "inspect", "--format", "{{.Id}}", reference]
    return subprocess.run(inspect, capture_output=True, text=True, check=True).stdout.strip()


def serving_image_ids(act: Act, environment: str) -> set[str]:
    """The image ids the environment's running app containers run, but the drained one kept
    for a rollback by switch (it takes no traffic)."""
    ids = set()
    drained = kept(act, environment)
    for container in _containers(environment, "app"):
        if container == drained:
            continue
        inspect = ["docker", "inspect", "--format", "{{.Image}}", container]
        ids.add(subprocess.run(inspect, capture_output=True, text=True, check=True).stdout.strip())
    return ids


def psql(environment: str, sql: str) -> str:
    (db,) = _containers(environment, "db")
    done = subprocess.run(
        ["docker", "exec", db, "sh", "-c",
         'psql -v ON_ERROR_STOP=1 -X -A -t -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "$0"', sql],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def health(act: Act) -> dict[str, Any]:
    url = load_config(act.git_server.work / "deploy.toml").environment("production").base_url
    answer: dict[str, Any] = requests.get(f"{url}/health", timeout=10).json()
    return answer


@dataclass
class Production:
    """What the scenarios hand on to each other."""

    short_watch: Path
    artifacts: dict[str, Path] = field(default_factory=dict)
    runs: dict[str, ActRun] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)  # tag -> repository@sha256:...
    cancelled: bool = False


@pytest.fixture(scope="module")
def production(
    act: Act,
    github: FakeGitHub,
    service_image: ServiceImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Production:
    """Staging and production serving a release (the one earlier modules left, else 1.16.0
    built here), each with this module's admin; release.yml with the short watch. v1.16.0 is
    tagged too: the build's migration lint of v1.16.1 starts from the release before's head
    (no migration since: expand-only, a rolling deploy)."""
    act.git_server.commit_release("1.16.0")
    act.git_server.tag("v1.16.0", "rbac-api 1.16.0")
    for environment in ("staging", "production"):
        status = deploytools(act, "--json", "status", "--env", environment, check=False)
        serving = status.returncode == 0 and json.loads(status.stdout)["result"].get("release")
        if not serving:
            image = service_image("1.16.0")
            deploytools(act, "deploy", "--env", environment, "--image", image, "--no-backup-check")
        (app, *_) = _containers(environment, "app")
        subprocess.run(
            ["docker", "exec", "-e", f"ADMIN_USERNAME={SECRETS['ADMIN_USERNAME']}",
             "-e", f"ADMIN_PASSWORD={SECRETS['ADMIN_PASSWORD']}", app,
             "python3", "-m", "rbac_api.create_admin"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    text = (ROOT / ".github" / "workflows" / "release.yml").read_text()
    assert text.count(WATCH[0]) == 1, "release.yml's watch changed: update WATCH"
    short = tmp_path_factory.mktemp("dtwf-workflows") / "release.yml"
    short.write_text(text.replace(*WATCH))
    return Production(short)


def _payload(act: Act, github: FakeGitHub, tag: str, where: Path) -> Path:
    """A release commit for `tag` on main, tagged and pushed; its required checks green."""
    act.git_server.commit_release(tag[1:])
    commit = act.git_server.tag(tag, f"rbac-api {tag[1:]}")
    github.protected_repository(REPOSITORY, sha=commit)
    payload = where / f"push-{tag}.json"
    payload.write_text(json.dumps({"ref": f"refs/tags/{tag}", "after": commit}))
    return payload


def _hooks(hooks: FakeWebhooks) -> dict[str, str]:
    return {
        "SLACK_WEBHOOK_URL": f"{hooks.url}/slack",
        "STATUS_PAGE_HOOK_URL": f"{hooks.url}/status",
    }


def _image_of(run: ActRun) -> str:
    outputs = dict(re.findall(r"::set-output:: (image|digest)=(\S+)", run.log))
    return outputs["image"]


def _notices(received: list[Any]) -> list[tuple[str, str]]:
    return [(r.path, json.dumps(r.json)) for r in received]


def release_run(
    act: Act, github: FakeGitHub, production: Production, tag: str, tmp: Path
) -> tuple[ActRun, list[tuple[str, str]]]:
    artifacts = production.artifacts[tag] = tmp / f"artifacts-{tag}"
    with FakeWebhooks() as hooks:
        run = act.run(
            "push", production.short_watch, payload=_payload(act, github, tag, tmp),
            github_api=github.url, secrets={**SECRETS, **_hooks(hooks)},
            artifacts=artifacts, timeout_s=1200,
        )  # fmt: skip
        received = _notices(list(hooks.received))
    production.runs[tag] = run
    return run, received


def test_a_tag_goes_to_production_at_the_builds_digest(
    act: Act, github: FakeGitHub, registry: str, production: Production, tmp_path: Path
) -> None:
    run, notices = release_run(act, github, production, "v1.16.1", tmp_path)
    assert run.returncode == 0, run.log[-8000:]
    assert run.jobs() == dict.fromkeys(ALL_JOBS, "succeeded"), run.log[-8000:]
    image = production.images["v1.16.1"] = _image_of(run)
    assert image.startswith(f"{registry}/example/rbac-api@sha256:")
    # The build's digest, pulled here from the registry, is what production's containers run.
    subprocess.run(["docker", "pull", "-q", image], check=True, capture_output=True, timeout=300)
    inspect = ["docker", "image", "inspect", "--format", "{{.Id}}", image]
    pulled = subprocess.run(inspect, capture_output=True, text=True, check=True).stdout.strip()
    assert serving_image_ids(act, "production") == {pulled}
    assert health(act)["version"] == "1.16.1"
    # The records: a deploy of that digest, current; rolling, chosen from the image's labels
    # (the build's migration lint: no migration since v1.16.0, expand-only).
    history = result(act, "history", "--env", "production")
    current = history["current"]
    assert current["image"] == image
    assert current["kind"] == "deploy"
    assert current["outcome"] == "succeeded"
    assert (current["strategy_asked"], current["strategy"]) == ("auto", "rolling"), current
    assert current["strategy_reason"].startswith("expand-only"), current
    assert current["maintenance"] is None, current
    # Each production change was checked against the digest, the watch ran.
    assert "Success - Main production serves the build's digest" in run.log
    assert "Success - Main production still serves the build's digest" in run.log
    # Told: success, to Slack and the status page; no maintenance window (a rolling deploy
    # makes none).
    paths = [p for p, _ in notices]
    assert sorted(paths) == ["/slack", "/status"], notices
    assert not any("maintenance" in t for _, t in notices), notices
    last_slack = [t for p, t in notices if p == "/slack"][-1]
    assert "v1.16.1 on production is deployed and verified" in last_slack, last_slack
    assert not any("fail" in t.lower() or "rolled back" in t for _, t in notices), notices
    # The runbook report of the release, from this run's check results.
    report = (production.artifacts["v1.16.1"] / "release-report" / "release-report.md").read_text()
    assert "1.16.1" in report and image.split("@")[1] in report


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _exited(pid: int, *, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def cancel_during(
    act: subprocess.Popen[bytes],
    command: str,
    under_way: Callable[[], bool],
    timeout_s: float,
) -> str | None:
    """Cancel the run as GitHub cancels a job once `command` runs and is `under_way()` (polled
    up to `timeout_s`, then fails): SIGINT to the step's process
    (the one act started for the step), SIGTERM 7.5 s later, SIGKILL to what is left of its
    tree 2.5 s after that (each wait ends when the step's process has exited). act is
    stopped first, so that nothing after the step runs (a cancelled run skips every later step
    and job guarded by success(), failure() or !cancelled()); it is killed at the end. Returns
    what the step's process ran, or None when act ended before the step began (the run
    failed earlier)."""
    act_pid = act.pid
    deadline = time.monotonic() + timeout_s
    while True:
        found = [p for p in _descendants(act_pid) if command in _cmdline(p)]
        if found:
            break
        if act.poll() is not None:
            return None
        assert time.monotonic() < deadline, f"{command!r} never ran"
        time.sleep(0.2)
    while not under_way():
        assert act.poll() is None and time.monotonic() < deadline, f"{command!r} never got going"
        time.sleep(0.2)
    step = found[0]
    while _parent(step) != act_pid:
        step = _parent(step)
    ran = _cmdline(step)
    tree = [p for p in _descendants(act_pid) if p == step or p in _descendants(step)]
    os.kill(act_pid, signal.SIGSTOP)
    os.kill(step, signal.SIGINT)
    # The runner waits for the step's process, up to 7.5 s, then 2.5 s after SIGTERM.
    if not _exited(step, within_s=7.5):
        os.kill(step, signal.SIGTERM)
        _exited(step, within_s=2.5)
    for pid in tree:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    os.kill(act_pid, signal.SIGKILL)
    return ran


def test_e_a_run_cancelled_during_deploy_production_leaves_no_lock_and_one_release(
    act: Act, github: FakeGitHub, production: Production, tmp_path: Path
) -> None:
    assert "v1.16.1" in production.images, "(a) must have run first"
    before = result(act, "history", "--env", "production")
    artifacts = tmp_path / "artifacts"
    with FakeWebhooks() as hooks:
        argv, env = act.argv(
            "push", production.short_watch, payload=_payload(act, github, "v1.16.2", tmp_path),
            github_api=github.url, secrets={**SECRETS, **_hooks(hooks)}, artifacts=artifacts,
        )  # fmt: skip
        with tempfile.TemporaryFile("w+") as out:
            process = subprocess.Popen(
                argv, cwd=act.git_server.work, env=env, stdout=out, stderr=subprocess.STDOUT
            )

            def new_release_starting() -> bool:
                """The deploy is under way: the build's image runs in a new app container
                (its record was saved before), not yet serving."""
                # Read at 0 without moving the offset act writes at (the same open file).
                size = os.fstat(out.fileno()).st_size
                so_far = os.pread(out.fileno(), size, 0).decode(errors="replace")
                image = dict(re.findall(r"::set-output:: (image)=(\S+)", so_far))
                return bool(image) and image_id(image["image"]) in _app_image_ids("production")

            try:
                ran = cancel_during(
                    process, "deploy --env production", new_release_starting, timeout_s=900
                )
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait(timeout=30)
            out.seek(0)
            log = out.read()
        act.keep_log("push-cancelled", production.short_watch, log)
        notices = _notices(list(hooks.received))
    assert ran is not None, f"the run ended before deploy-production: {log[-8000:]}"
    production.cancelled = True
    production.images["v1.16.2"] = _image_of(ActRun(1, log))
    # The step's process is deploytools itself (`exec`): the signals reached it.
    assert "deploytools deploy --env production" in ran, ran
    # The cancelled deploy released its lock on its way out: nobody must break it.
    assert result(act, "lock", "show", "--env", "production")["lock"] is None, log[-6000:]
    # The cancelled deploy's record says so; the current release is still the one before.
    history = result(act, "history", "--env", "production")
    assert history["current"]["id"] == before["current"]["id"], history["current"]
    cancelled = [r for r in history["releases"] if r["image"] == production.images["v1.16.2"]]
    assert [(r["kind"], r["outcome"]) for r in cancelled if r["kind"] != "migrate"] == [
        ("deploy", "interrupted")
    ]
    # Never two releases at once: the running app containers run one image at most. (Which
    # one, or none, depends on the deploy's phase when the signal came: the recreate
    # strategy stops the old app before the new one starts; the next release, test_c,
    # makes production whole again without anyone's hand.)
    ids = serving_image_ids(act, "production")
    assert len(ids) <= 1, ids
    # Nothing was told: a rolling deploy announces no maintenance window, and the cancel
    # stopped the run before its outcome.
    assert notices == [], notices


def test_c_verify_production_failing_rolls_back_to_the_release_it_replaced(
    act: Act, github: FakeGitHub, production: Production, tmp_path: Path
) -> None:
    assert production.cancelled, "(e) must have run first"
    replaced = result(act, "history", "--env", "production")["current"]
    # Production's viewer loses its role behind the checks' back: verify fails there only.
    psql("production", REVOKE_VIEWER)
    run, notices = release_run(act, github, production, "v1.16.3", tmp_path)
    jobs = run.jobs()
    for job in ALL_JOBS - {"production", "monitor production", "report production"}:
        assert jobs.get(job) == "succeeded", (job, run.log[-8000:])
    assert jobs.get("production") == "failed", run.log[-8000:]
    assert "monitor production" not in jobs
    image = production.images["v1.16.3"] = _image_of(run)
    # It proceeded without a hand `lock break` after (e)'s cancel: backup, migrate, deploy.
    for step in ("back up the production database", "migrate the production database",
                 "deploy to production", "production serves the build's digest"):  # fmt: skip
        assert f"Success - Main {step}" in run.log, step
    assert "Failure - Main post-deployment verification" in run.log
    assert f"replaces release {replaced['id']}" in run.log
    assert "Success - Main roll production back to the release this run replaced" in run.log
    assert "Success - Main production serves the release it was rolled back to" in run.log
    # What serves: the release this run replaced, by its image; the records say so.
    history = result(act, "history", "--env", "production")
    current = history["current"]
    assert current["kind"] == "rollback", current
    # (recorded as the tag deploytools kept of that release: the same image)
    assert current["version"] == replaced["version"], current
    assert current["image_id"] == replaced["image_id"], (current, replaced)
    # v1.16.3 migrated and deployed once each (newest first), then rolled back from.
    deployed = [r for r in history["releases"] if r["image"] == image]
    assert [r["kind"] for r in deployed] == ["deploy", "migrate"], deployed
    assert serving_image_ids(act, "production") == {image_id(replaced["image"])}
    assert health(act)["version"] == replaced["version"]
    # Told: a rollback naming the release, never success; the incident report is kept.
    slack = [t for p, t in notices if p == "/slack"]
    assert len(slack) == 1, notices
    assert f"rolled back to release {replaced['id']}" in slack[-1], slack[-1]
    assert not any(SUCCESS in t for t in slack), slack
    incident = production.artifacts["v1.16.3"] / "incident-report" / "incident-report.md"
    assert incident.read_text().strip()
    verified = production.artifacts["v1.16.3"] / "verify-production" / "verify-production.json"
    assert verified.exists()


def rerun_workflow(workflow: Path, first: ActRun, where: Path) -> Path:
    """`workflow` as GitHub re-runs its failed jobs after `first`: each job that succeeded is a
    stand-in of the same id, needs and outputs (first's values); the others are unchanged."""
    data = yaml.safe_load(workflow.read_text())
    data["on"] = data.pop(True)
    ended = first.jobs()
    outputs = dict(re.findall(r"::set-output:: (image|digest)=(\S+)", first.log))
    jobs: dict[str, Any] = data["jobs"]
    # GitHub re-runs the failed jobs and every job that needs one of them, at any depth.
    again = {j for j, job in jobs.items() if ended.get(job["name"]) == "failed"}
    while grown := {j for j, job in jobs.items() if set(job.get("needs", [])) & again} - again:
        again |= grown
    for job_id, job in jobs.items():
        if job_id in again:
            continue
        assert ended.get(job["name"]) == "succeeded", (job_id, ended)
        stand_in: dict[str, Any] = {
            "name": job["name"],
            "runs-on": job["runs-on"],
            "steps": [{"run": "echo 'succeeded in the first attempt: not run again'"}],
        }
        if "needs" in job:
            stand_in["needs"] = job["needs"]
        if "outputs" in job:
            stand_in["outputs"] = {name: outputs[name] for name in job["outputs"]}
        data["jobs"][job_id] = stand_in
    rerun = where / "release-rerun.yml"
    rerun.write_text(yaml.safe_dump(data, sort_keys=False))
    return rerun


def test_d_rerunning_the_failed_jobs_goes_no_release_too_far_and_tells_no_success(
    act: Act, github: FakeGitHub, production: Production, tmp_path: Path
) -> None:
    assert "v1.16.3" in production.runs, "(c) must have run first"
    before = result(act, "history", "--env", "production")
    # The viewer has its role again: were v1.16.3 deployed again, it would verify and pass.
    psql("production", GRANT_VIEWER)
    workflow = rerun_workflow(production.short_watch, production.runs["v1.16.3"], tmp_path)
    payload = tmp_path / "push.json"
    commit = act.git_server.head()
    payload.write_text(json.dumps({"ref": "refs/tags/v1.16.3", "after": commit}))
    with FakeWebhooks() as hooks:
        run = act.run(
            "push", workflow, payload=payload, github_api=github.url,
            secrets={**SECRETS, **_hooks(hooks)},
            artifacts=production.artifacts["v1.16.3"], timeout_s=900,
        )  # fmt: skip
        notices = _notices(list(hooks.received))
    jobs = run.jobs()
    assert jobs.get("production") == "failed", run.log[-8000:]
    assert "is not deployed again by a re-run" in run.log, run.log[-8000:]
    for step in ("back up the production database", "deploy to production"):
        assert f"Main {step}" not in run.log.split("the release this run replaces", 1)[1]
    # Production untouched: the same records, the same release serving.
    after = result(act, "history", "--env", "production")
    assert after["releases"] == before["releases"]
    assert after["current"]["image"] == before["current"]["image"]
    assert health(act)["version"] == before["current"]["version"]
    # No success for the rolled-back tag; the team is told the re-run changed nothing, and
    # the public status page (production is fine) is left alone.
    assert not any(SUCCESS in t for _, t in notices), notices
    assert [p for p, _ in notices] == ["/slack"], notices
    assert "not changed" in notices[0][1], notices
