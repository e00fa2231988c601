"""`pipeline run` over fakes: the order of the steps, what they are handed, the approval gate,
the rollback rule, resuming, the lock. The step functions and the store are fakes; the real
ones run in tests/e2e/test_pipeline_e2e.py."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploytools import pipeline, pipeline_run
from deploytools.checks.results import CheckResult as SuiteCheck
from deploytools.checks.results import Verdict
from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.errors import CheckFailed, ExitCode, LockHeld, UsageError
from deploytools.steps import app_service
from deploytools.steps import backup as backup_step
from deploytools.steps import checks as checks_step
from deploytools.steps import deploy as deploy_step
from deploytools.steps import image as image_step
from deploytools.steps import migrate as migrate_step
from deploytools.steps import release as release_step
from deploytools.steps import report as report_step
from deploytools.steps import rollback as rollback_step
from deploytools.steps.image import BuiltImage
from deploytools.steps.release import CheckResult, ReleaseReport
from deploytools.store.records import BackupManifest, ReleaseRecord, Verification
from tests.fakes.memory_store import MemoryStore

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_ID = "sha256:" + "ab" * 32
COMMIT = "c0ffee" * 6 + "abcd"


class Fakes:
    """Every step function the pipeline calls, recording the calls; `fail` makes one fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: dict[str, Exception] = {}
        self.verdicts: dict[str, Verdict] = {}
        self.serving: str | None = None
        self.production_deploy_error: Exception | None = None
        self.store = MemoryStore()
        fakes = self

        @contextlib.contextmanager
        def open_environment(ctx: StepContext, environment: str) -> Iterator[Any]:
            yield SimpleNamespace(store=fakes.store, target=SimpleNamespace(name=environment))

        monkeypatch.setattr(pipeline_run, "open_environment", open_environment)
        monkeypatch.setattr(release_step, "repository_root", lambda repo: repo)
        monkeypatch.setattr(release_step, "tag_commit", lambda root, tag: COMMIT)
        monkeypatch.setattr(release_step, "run", self._record("release", self._release))
        monkeypatch.setattr(image_step, "build", self._record("build", self._build))
        monkeypatch.setattr(deploy_step, "run", self._record("deploy", self._deploy))
        monkeypatch.setattr(app_service, "running_app", self._running)
        monkeypatch.setattr(checks_step, "run", self._record("checks", self._suite))
        monkeypatch.setattr(backup_step, "create", self._record("backup", self._backup))
        monkeypatch.setattr(backup_step, "verify", self._record("verify-backup", self._verify))
        monkeypatch.setattr(migrate_step, "run", self._record("migrate", self._migrate))
        monkeypatch.setattr(rollback_step, "run", self._record("rollback", self._rollback))

        def no_report(ctx: StepContext, **kwargs: Any) -> Any:
            raise UsageError("no release records in the fake")

        monkeypatch.setattr(report_step, "gather", no_report)

    def _record(self, name: str, fn: Any) -> Any:
        def call(ctx: StepContext, **kwargs: Any) -> Any:
            key = name if name != "checks" else f"checks:{kwargs['suite']}"
            self.calls.append((key, kwargs))
            if key in self.fail:
                raise self.fail[key]
            return fn(**kwargs)

        return call

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def _release(self, **kw: Any) -> ReleaseReport:
        return ReleaseReport(
            tag=kw["tag"],
            version="1.15.2",
            commit=COMMIT,
            target_env=kw["target_env"],
            repository="/repo",
            source_dir=".",
            checks=(CheckResult("tag-format", "passed", "a release tag"),),
        )

    def _build(self, **kw: Any) -> BuiltImage:
        return BuiltImage("rbac:1.15.2", IMAGE_ID, None, "1.15.2", COMMIT, {}, pushed=False)

    def _deploy(self, **kw: Any) -> Any:
        if kw["environment"] == "production" and self.production_deploy_error:
            raise self.production_deploy_error
        record = ReleaseRecord(
            id="0003", environment=kw["environment"], kind="deploy", who="t", started="s",
            image=kw["image"],
        )  # fmt: skip
        if kw["environment"] == "production":
            self.serving = kw["image"]
        return deploy_step.DeployResult(kw["environment"], True, "deployed", record)

    def _running(self, target: Any) -> Any:
        if self.serving is None:
            return None
        return app_service.RunningApp(image=self.serving, image_id=self.serving, healthy=True)

    def _suite(self, **kw: Any) -> checks_step.SuiteReport:
        verdict = self.verdicts.get(kw["suite"], Verdict.PASS)
        result = SuiteCheck("health", verdict, "200", "200", "" if verdict is Verdict.PASS else "x")
        return checks_step.SuiteReport(
            kw["environment"], kw["suite"], "http://x", "a", "b", verdict, (result,)
        )

    def _backup(self, **kw: Any) -> BackupManifest:
        return BackupManifest(
            id="b1", environment="production", created="c", database="rbac", release=None,
            image=None, version=None, revision="0001", size=1, sha256="s", pg_dump_version="15",
            row_counts={"users": 3}, file="f",
        )  # fmt: skip

    def _verify(self, **kw: Any) -> Verification:
        return Verification("b1", "v", True, True, True, True, True, "ok")

    def _migrate(self, **kw: Any) -> migrate_step.MigrationResult:
        return migrate_step.MigrationResult(
            "production", kw["image"], "0001", "0002", "b1", False, 1.0
        )

    def _rollback(self, **kw: Any) -> ReleaseRecord:
        self.serving = "previous"
        return ReleaseRecord(
            id="0004", environment="production", kind="rollback", who="t", started="s",
            image="previous",
        )  # fmt: skip


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Fakes:
    for name in ("POSTGRES_PASSWORD", "APP_SECRET_KEY"):
        monkeypatch.setenv(name, "x" * 20)
    return Fakes(monkeypatch)


def ctx(lines: list[str] | None = None) -> StepContext:
    sink = lines.append if lines is not None else (lambda _m: None)
    return StepContext(config=load_config(REPO_ROOT / "deploy.toml"), progress=sink)


def run(**kwargs: Any) -> pipeline_run.PipelineResult:
    kwargs.setdefault("tag", "v1.15.2")
    kwargs.setdefault("repo", Path("/repo"))
    context = kwargs.pop("context", None) or ctx()
    return pipeline_run.run(context, **kwargs)


def statuses(result: pipeline_run.PipelineResult) -> dict[str, str]:
    return {s.name: s.status for s in result.record.steps}


def test_runs_every_step_in_order_with_the_image_by_id(fakes: Fakes) -> None:
    lines: list[str] = []
    result = run(approved_by="tester (--yes)", context=ctx(lines))

    assert result.ok and result.record.status == "succeeded"
    assert fakes.names() == [
        "release",
        "build",
        "deploy",
        "checks:smoke",
        "checks:validate",
        "backup",
        "verify-backup",
        "migrate",
        "deploy",
        "checks:verify",
    ]
    calls = dict(fakes.calls[:2])
    assert calls["release"]["target_env"] == "staging"  # production's rule is at the gate
    deploys = [kw for name, kw in fakes.calls if name in ("deploy", "migrate")]
    assert [d["environment"] for d in deploys] == ["staging", "production", "production"]
    assert all(d["image"] == IMAGE_ID for d in deploys)
    assert statuses(result)["monitor-production"] == "skipped"
    assert result.record.approved_by == "tester (--yes)"
    assert result.record.image == IMAGE_ID and result.record.image_ref == "rbac:1.15.2"
    assert "[9/11] deploy-production: Deploy the image to production" in lines
    assert any(line.startswith("[9/11] deploy-production: passed in ") for line in lines)
    # The record and the checks' evidence are in the store; the lock is gone.
    stored = json.loads(fakes.store.files["production/pipelines/v1.15.2.json"])
    assert stored["status"] == "succeeded"
    assert "production/pipelines/v1.15.2/verify-production.json" in fakes.store.files
    assert "production/pipelines/lock.json" not in fakes.store.files
    assert result.report_markdown is not None
    assert "| deploy-production | ✅ passed |" in result.report_markdown


def test_without_approval_it_stops_at_the_gate_and_continues_there(fakes: Fakes) -> None:
    stopped = run()

    assert isinstance(stopped.error, pipeline_run.ApprovalRequired)
    assert stopped.error.exit_code == ExitCode.USAGE
    assert "--yes" in (stopped.error.hint or "")
    assert stopped.record.status == "waiting-for-approval"
    assert "backup" not in fakes.names() and fakes.names().count("deploy") == 1

    fakes.calls.clear()
    resumed = run(approve=lambda question: "production" in question)

    assert resumed.ok and resumed.resumed_from == "approve-production"
    assert fakes.names()[0] == "backup"  # nothing before the gate ran again
    assert statuses(resumed)["approve-production"] == "passed"


def test_a_declined_approval_stops_with_production_untouched(fakes: Fakes) -> None:
    result = run(approve=lambda question: False)

    assert result.error is not None and result.record.status == "declined"
    assert "not approved" in result.error.message
    assert "backup" not in fakes.names()


def test_failed_verification_in_production_rolls_back_then_a_rerun_asks_again(
    fakes: Fakes,
) -> None:
    fakes.verdicts["verify"] = Verdict.FAIL
    result = run(approved_by="tester")

    assert isinstance(result.error, CheckFailed)
    assert fakes.names()[-1] == "rollback"
    assert fakes.calls[-1][1]["reason"] == "verification failed"
    assert result.record.status == "rolled-back"
    assert "rolled back automatically" in (result.error.untouched or "")
    assert statuses(result)["rollback-production"] == "passed"

    # Run again: the rollback undid the production steps; they start again from the gate.
    fakes.calls.clear()
    fakes.verdicts.clear()
    again = run()
    assert isinstance(again.error, pipeline_run.ApprovalRequired)
    assert fakes.names() == []


def test_a_failed_staging_check_stops_before_production_without_rollback(fakes: Fakes) -> None:
    fakes.verdicts["smoke"] = Verdict.INCONCLUSIVE
    result = run(approved_by="tester")

    assert isinstance(result.error, CheckFailed)
    assert "production was not touched" in (result.error.untouched or "")
    assert fakes.names() == ["release", "build", "deploy", "checks:smoke"]
    assert statuses(result)["smoke-staging"] == "failed"
    assert "production/pipelines/lock.json" not in fakes.store.files


def test_a_failed_migration_is_not_rolled_back_and_resumes_at_the_migration(
    fakes: Fakes,
) -> None:
    fakes.fail["migrate"] = UsageError("the migration failed: value too long")
    result = run(approved_by="tester")
    assert result.error is fakes.fail["migrate"]
    assert "rollback" not in fakes.names()
    assert result.record.status == "failed"
    assert result.record.error == "migrate-production: the migration failed: value too long"

    fakes.calls.clear()
    del fakes.fail["migrate"]
    resumed = run(approved_by="tester")
    assert resumed.ok and resumed.resumed_from == "migrate-production"
    assert fakes.names() == ["migrate", "deploy", "checks:verify"]


def test_a_second_pipeline_is_refused_by_the_lock(fakes: Fakes) -> None:
    log = pipeline_run.PipelineLog(fakes.store, "production")
    held = log.acquire("pipeline", ttl_s=600)
    with pytest.raises(LockHeld) as refused:
        run(approved_by="tester")
    assert "another pipeline is running" in refused.value.message
    assert f"pid {held.pid}" in refused.value.message
    assert fakes.names() == []


def test_a_release_already_serving_is_not_deployed_again(fakes: Fakes) -> None:
    assert run(approved_by="tester").ok
    fakes.calls.clear()
    again = run(approved_by="tester")
    assert again.already_done and fakes.names() == []

    # Production no longer runs it (rolled back by hand, say): the pipeline runs again.
    fakes.serving = "something else"
    third = run(approved_by="tester")
    assert third.ok and not third.already_done
    assert third.record.attempt == 2 and fakes.names()[0] == "release"


def test_every_step_of_the_runbook_has_a_handler() -> None:
    walker = object.__new__(pipeline_run._Walker)
    for step in pipeline.STEPS:
        assert callable(walker._handler(step))


def test_a_deploy_that_rolled_itself_back_counts_as_rolled_back(fakes: Fakes) -> None:
    fakes.production_deploy_error = CheckFailed(
        "never became healthy", facts={"release": "0003", "rollback": "0004"}
    )
    result = run(approved_by="tester")

    assert result.error is fakes.production_deploy_error
    assert "rollback" not in fakes.names()  # the deploy did it; a second would go too far
    assert result.record.status == "rolled-back"
    assert result.record.releases == {"staging": "0003", "production": "0003", "rollback": "0004"}


def test_cli_without_a_terminal_or_yes_stops_at_the_gate_with_exit_2(fakes: Fakes) -> None:
    from click.testing import CliRunner

    from deploytools.cli import cli

    config = str(REPO_ROOT / "deploy.toml")
    args = ["--config", config, "--json", "pipeline", "run", "--tag", "v1.15.2", "--repo", "/"]
    stopped = CliRunner().invoke(cli, args)

    assert stopped.exit_code == 2, stopped.output
    error = json.loads(stopped.stdout)["error"]
    assert error["type"] == "ApprovalRequired"
    assert "--yes" in error["hint"]
    record = error["facts"]["pipeline"]["record"]
    assert record["status"] == "waiting-for-approval"
    assert {s["name"]: s["status"] for s in record["steps"]}["validate-staging"] == "passed"

    approved = CliRunner().invoke(cli, [*args, "--yes"])
    assert approved.exit_code == 0, approved.output
    body = json.loads(approved.stdout)["result"]
    assert body["resumed_from"] == "approve-production"
    assert body["record"]["status"] == "succeeded"
    assert body["record"]["approved_by"].endswith("(--yes)")


def test_a_pre_release_goes_to_staging_and_stops_at_the_gate(fakes: Fakes) -> None:
    result = run(tag="v1.15.2-rc.1", approved_by="tester")

    assert isinstance(result.error, CheckFailed)
    assert "pre-release" in result.error.message
    assert statuses(result)["validate-staging"] == "passed"
    assert statuses(result)["approve-production"] == "failed"
    assert "backup" not in fakes.names()
