"""`pipeline run` over fakes: the order of the steps, what they are handed, the approval gate,
the rollback rule, resuming, the lock. The step functions and the store are fakes handed to the
walker (PipelineSteps); the real ones run in tests/e2e/test_pipeline_e2e.py."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploytools import pipeline
from deploytools.checks.results import CheckResult as SuiteCheck
from deploytools.checks.results import Verdict
from deploytools.cli.app import Injected
from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.errors import CheckFailed, DeployCancelled, ExitCode, LockHeld, UsageError
from deploytools.pipeline import walker
from deploytools.pipeline.store import PipelineStore
from deploytools.steps import app_service
from deploytools.steps import backup as backup_step
from deploytools.steps import check_suites as checks_step
from deploytools.steps import deploy as deploy_step
from deploytools.steps import migrate as migrate_step
from deploytools.steps.image import BuiltImage
from deploytools.steps.release import CheckResult, ReleaseReport
from deploytools.store.records import BackupManifest, ReleaseRecord, Verification
from tests.fakes.memory_store import MemoryStore

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_ID = "sha256:" + "ab" * 32
COMMIT = "c0ffee" * 6 + "abcd"


class Fakes:
    """Every step function the pipeline calls, recording the calls; `fail` makes one fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: dict[str, Exception] = {}
        self.verdicts: dict[str, Verdict] = {}
        self.serving: str | None = None
        self.production_deploy_error: Exception | None = None
        self.fail_monitor: list[str] = []
        self.store = MemoryStore()
        #: the platform each running_app call was asked about
        self.asked: list[Any] = []
        #: what build_image returns (pushed or not)
        self.built = BuiltImage("rbac:1.15.2", IMAGE_ID, None, "1.15.2", COMMIT, {}, pushed=False)
        fakes = self

        @contextlib.contextmanager
        def open_environment(ctx: StepContext, environment: str) -> Iterator[Any]:
            # No `target`: on a Swarm environment EnvSession.target raises; the walker asks
            # the session's platform, whatever it runs on.
            yield SimpleNamespace(store=fakes.store, platform=fakes.platform(environment))

        def no_report(ctx: StepContext, **kwargs: Any) -> Any:
            raise UsageError("no release records in the fake")

        self.steps = walker.PipelineSteps(
            verify_release=self._record("release", self._release),
            build_image=self._record("build", self._build),
            deploy=self._record("deploy", self._deploy),
            check_suite=self._record("checks", self._suite),
            backup=self._record("backup", self._backup),
            migrate=self._record("migrate", self._migrate),
            monitor=self._record("monitor", self._monitor),
            rollback=self._record("rollback", self._rollback),
            report=no_report,
            tag_commit=lambda repo, tag: COMMIT,
            running_app=self._running,
            open_environment=open_environment,
        )

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

    def platform(self, environment: str) -> Any:
        return SimpleNamespace(name=environment, kind="platform")

    def _build(self, **kw: Any) -> BuiltImage:
        return self.built

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
        self.asked.append(target)
        if self.serving is None:
            return None
        return app_service.RunningApp(image=self.serving, image_id=self.serving, healthy=True)

    def _suite(self, **kw: Any) -> checks_step.SuiteReport:
        verdict = self.verdicts.get(kw["suite"], Verdict.PASS)
        result = SuiteCheck("health", verdict, "200", "200", "" if verdict is Verdict.PASS else "x")
        return checks_step.SuiteReport(
            kw["environment"], kw["suite"], "http://x", "a", "b", verdict, (result,),
            recorded=f"saved in release record 0003 of {kw['environment']}",
        )  # fmt: skip

    def _backup(self, **kw: Any) -> backup_step.BackupRun:
        manifest = BackupManifest(
            id="b1", environment="production", created="c", database="rbac", release=None,
            image=None, version=None, revision="0001", size=1, sha256="s", pg_dump_version="15",
            row_counts={"users": 3}, file="f",
        )  # fmt: skip
        verification = Verification("b1", "v", True, True, True, True, True, "ok")
        return backup_step.BackupRun(manifest, verification, pruned=("b0",))

    def _monitor(self, **kw: Any) -> Any:
        from deploytools.steps.monitor import MonitorReport

        breaches = tuple(self.fail_monitor)
        if breaches:
            self.serving = "previous"
        return MonitorReport(
            environment=kw["environment"], started="a", finished="b",
            duration_s=kw["duration_s"], interval_s=kw["interval_s"], consecutive_failures=3,
            failure_limit=5, samples=2, verdict=Verdict.FAIL if breaches else Verdict.PASS,
            breaches=breaches, results=(), rolled_back=bool(breaches),
        )  # fmt: skip

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
    for name in ("POSTGRES_PASSWORD", "APP_SECRET_KEY"):  # production's secrets, for the gate
        monkeypatch.setenv(name, "x" * 20)
    return Fakes()


def ctx(lines: list[str] | None = None, *, config: Path | None = None) -> StepContext:
    sink = lines.append if lines is not None else (lambda _m: None)
    return StepContext(config=load_config(config or REPO_ROOT / "deploy.toml"), progress=sink)


def swarm_production(tmp_path: Path) -> Path:
    """The repository's deploy.toml with production on Swarm (staging stays on Compose)."""
    text = (REPO_ROOT / "deploy.toml").read_text(encoding="utf-8")
    section = '[environments.production]\ndocker_host = ""\n'
    assert section in text
    text = text.replace(section, section + 'platform = "swarm"\n')
    text = text.replace('compose_files = ["', f'compose_files = ["{REPO_ROOT}/')
    config = tmp_path / "deploy.toml"
    config.write_text(text, encoding="utf-8")
    return config


def run(fakes: Fakes, **kwargs: Any) -> walker.PipelineResult:
    kwargs.setdefault("tag", "v1.15.2")
    kwargs.setdefault("repo", Path("/repo"))
    context = kwargs.pop("context", None) or ctx()
    return walker.run(context, steps=fakes.steps, **kwargs)


def statuses(result: walker.PipelineResult) -> dict[str, str]:
    return {s.name: s.status for s in result.record.steps}


def test_both_deploys_use_the_auto_strategy_and_production_carries_the_gates_approval(
    fakes: Fakes,
) -> None:
    result = run(fakes, approved_by="tester (--yes)")
    assert result.ok
    deploys = {kw["environment"]: kw for name, kw in fakes.calls if name == "deploy"}
    assert {env: kw["strategy"] for env, kw in deploys.items()} == {
        "staging": "auto",
        "production": "auto",
    }
    # production's approval is the gate's; staging (no approval required) gets --yes's
    assert deploys["production"]["approved_by"] == "tester (--yes)"
    assert deploys["production"]["confirm"] is None


def test_runs_every_step_in_order_with_the_image_by_id(fakes: Fakes) -> None:
    lines: list[str] = []
    result = run(fakes, approved_by="tester (--yes)", context=ctx(lines))

    assert result.ok and result.record.status == "succeeded"
    assert fakes.names() == [
        "release",
        "build",
        "deploy",
        "checks:smoke",
        "checks:validate",
        "backup",
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
    stopped = run(fakes)

    assert isinstance(stopped.error, walker.ApprovalRequired)
    assert stopped.error.exit_code == ExitCode.USAGE
    assert "--yes" in (stopped.error.hint or "")
    assert stopped.record.status == "waiting-for-approval"
    assert "backup" not in fakes.names() and fakes.names().count("deploy") == 1

    fakes.calls.clear()
    resumed = run(fakes, approve=lambda question: "production" in question)

    assert resumed.ok and resumed.resumed_from == "approve-production"
    assert fakes.names()[0] == "backup"  # nothing before the gate ran again
    assert statuses(resumed)["approve-production"] == "passed"


def test_a_declined_approval_stops_with_production_untouched(fakes: Fakes) -> None:
    result = run(fakes, approve=lambda question: False)

    assert result.error is not None and result.record.status == "declined"
    assert "not approved" in result.error.message
    assert "backup" not in fakes.names()


def test_failed_verification_in_production_rolls_back_then_a_rerun_asks_again(
    fakes: Fakes,
) -> None:
    fakes.verdicts["verify"] = Verdict.FAIL
    result = run(fakes, approved_by="tester")

    assert isinstance(result.error, CheckFailed)
    assert fakes.names()[-1] == "rollback"
    assert fakes.calls[-1][1]["reason"] == "verification failed"
    assert result.record.status == "rolled-back"
    assert "rolled back automatically" in (result.error.untouched or "")
    assert statuses(result)["rollback-production"] == "passed"

    # Run again: the rollback undid the production steps; they start again from the gate.
    fakes.calls.clear()
    fakes.verdicts.clear()
    again = run(fakes)
    assert isinstance(again.error, walker.ApprovalRequired)
    assert fakes.names() == []


def test_a_failed_staging_check_stops_before_production_without_rollback(fakes: Fakes) -> None:
    fakes.verdicts["smoke"] = Verdict.INCONCLUSIVE
    result = run(fakes, approved_by="tester")

    assert isinstance(result.error, CheckFailed)
    assert "production was not touched" in (result.error.untouched or "")
    assert fakes.names() == ["release", "build", "deploy", "checks:smoke"]
    assert statuses(result)["smoke-staging"] == "failed"
    assert "production/pipelines/lock.json" not in fakes.store.files


def test_a_failed_migration_is_not_rolled_back_and_resumes_at_the_migration(
    fakes: Fakes,
) -> None:
    fakes.fail["migrate"] = UsageError("the migration failed: value too long")
    result = run(fakes, approved_by="tester")
    assert result.error is fakes.fail["migrate"]
    assert "rollback" not in fakes.names()
    assert result.record.status == "failed"
    assert result.record.error == "migrate-production: the migration failed: value too long"

    fakes.calls.clear()
    del fakes.fail["migrate"]
    resumed = run(fakes, approved_by="tester")
    assert resumed.ok and resumed.resumed_from == "migrate-production"
    assert fakes.names() == ["migrate", "deploy", "checks:verify"]


def test_a_second_pipeline_is_refused_by_the_lock(fakes: Fakes) -> None:
    log = PipelineStore(fakes.store, "production")
    held = log.acquire("pipeline", ttl_s=600)
    with pytest.raises(LockHeld) as refused:
        run(fakes, approved_by="tester")
    assert "another pipeline is running" in refused.value.message
    assert f"pid {held.pid}" in refused.value.message
    assert fakes.names() == []


def test_a_release_already_serving_is_not_deployed_again(fakes: Fakes) -> None:
    assert run(fakes, approved_by="tester").ok
    fakes.calls.clear()
    again = run(fakes, approved_by="tester")
    assert again.already_done and fakes.names() == []

    # Production no longer runs it (rolled back by hand, say): the pipeline runs again.
    fakes.serving = "something else"
    third = run(fakes, approved_by="tester")
    assert third.ok and not third.already_done
    assert third.record.attempt == 2 and fakes.names()[0] == "release"


def test_with_a_watch_every_step_of_the_runbook_runs_and_passes(fakes: Fakes) -> None:
    result = run(fakes, approved_by="tester", monitor_s=60)

    assert result.ok and result.record.status == "succeeded"
    assert statuses(result) == {s.name: "passed" for s in pipeline.STEPS}
    assert fakes.names()[-1] == "monitor"
    watch = fakes.calls[-1][1]
    assert watch["environment"] == "production" and watch["duration_s"] == 60
    assert watch["rollback_on_breach"] is True
    assert watch["interval_s"] == 12  # a fifth of the watch, under [checks.monitor]'s 15 s
    details = {s.name: s.detail for s in result.record.steps}
    # What the steps themselves did shows in the record: the suites' release-record note, the
    # backup's retention.
    assert details["verify-production"].endswith("saved in release record 0003 of production")
    assert details["backup-production"].endswith("1 old backups pruned")
    assert "production/pipelines/v1.15.2/monitor-production.json" in fakes.store.files


def test_a_breach_during_the_watch_counts_as_rolled_back_without_a_second_rollback(
    fakes: Fakes,
) -> None:
    fakes.fail_monitor = ["health: failed 3 samples in a row"]
    result = run(fakes, approved_by="tester", monitor_s=60)

    assert isinstance(result.error, CheckFailed)
    assert "breach (rolled back)" in result.error.message
    assert result.error.facts["rolled_back"] is True
    assert "rollback" not in fakes.names()  # monitor did it; a second would go too far
    assert result.record.status == "rolled-back"
    assert statuses(result)["monitor-production"] == "failed"


def test_the_pipeline_calls_the_step_functions_the_commands_call() -> None:
    """Same functions, same rules: the check suites and the watch keep their results in the
    release record and judge their verdicts, the backup is verified and then pruned, in
    `pipeline run` as in `deploytools smoke|validate|verify|monitor|backup create`."""
    from deploytools.steps import monitor as monitor_step

    real = walker.PipelineSteps()
    assert real.check_suite is checks_step.run_and_record
    assert real.monitor is monitor_step.run_and_record
    assert real.backup is backup_step.run
    assert real.deploy is deploy_step.run and real.migrate is migrate_step.run


def test_a_deploy_that_rolled_itself_back_counts_as_rolled_back(fakes: Fakes) -> None:
    fakes.production_deploy_error = CheckFailed(
        "never became healthy", facts={"release": "0003", "rollback": "0004"}
    )
    result = run(fakes, approved_by="tester")

    assert result.error is fakes.production_deploy_error
    assert "rollback" not in fakes.names()  # the deploy did it; a second would go too far
    assert result.record.status == "rolled-back"
    assert result.record.releases == {"staging": "0003", "production": "0003", "rollback": "0004"}


def test_cli_without_a_terminal_or_yes_stops_at_the_gate_with_exit_2(fakes: Fakes) -> None:
    from click.testing import CliRunner

    from deploytools.cli import cli

    config = str(REPO_ROOT / "deploy.toml")
    args = ["--config", config, "--json", "pipeline", "run", "--tag", "v1.15.2", "--repo", "/"]
    injected = Injected(pipeline_steps=fakes.steps)
    stopped = CliRunner().invoke(cli, args, obj=injected)

    assert stopped.exit_code == 2, stopped.output
    error = json.loads(stopped.stdout)["error"]
    assert error["type"] == "ApprovalRequired"
    assert "--yes" in error["hint"]
    record = error["facts"]["pipeline"]["record"]
    assert record["status"] == "waiting-for-approval"
    assert {s["name"]: s["status"] for s in record["steps"]}["validate-staging"] == "passed"

    approved = CliRunner().invoke(cli, [*args, "--yes"], obj=injected)
    assert approved.exit_code == 0, approved.output
    body = json.loads(approved.stdout)["result"]
    assert body["resumed_from"] == "approve-production"
    assert body["record"]["status"] == "succeeded"
    assert body["record"]["approved_by"].endswith("(--yes)")


def test_a_pre_release_goes_to_staging_and_stops_at_the_gate(fakes: Fakes) -> None:
    result = run(fakes, tag="v1.15.2-rc.1", approved_by="tester")

    assert isinstance(result.error, CheckFailed)
    assert "pre-release" in result.error.message
    assert statuses(result)["validate-staging"] == "passed"
    assert statuses(result)["approve-production"] == "failed"
    assert "backup" not in fakes.names()


def test_on_one_engine_the_image_is_not_pushed_and_goes_on_by_its_id(fakes: Fakes) -> None:
    assert run(fakes, approved_by="tester").ok
    assert dict(fakes.calls)["build"]["push"] is False


def test_with_production_on_swarm_the_image_is_pushed_and_goes_on_by_its_digest(
    fakes: Fakes, tmp_path: Path
) -> None:
    """Swarm's nodes pull the release from the registry: the build pushes it, and staging,
    the migration and production's deploy are all handed the registry's digest."""
    digest = "sha256:" + "cd" * 32
    fakes.built = BuiltImage(
        "registry:5000/rbac:1.15.2", IMAGE_ID, f"registry:5000/rbac@{digest}", "1.15.2",
        COMMIT, {}, pushed=True,
    )  # fmt: skip
    config = swarm_production(tmp_path)
    assert walker.needs_registry(ctx(config=config))

    result = run(fakes, approved_by="tester", context=ctx(config=config))

    assert result.ok, result.error
    assert dict(fakes.calls)["build"]["push"] is True
    pinned = f"registry:5000/rbac:1.15.2@{digest}"
    assert result.record.image == pinned
    handed = [
        (kw["environment"], kw["image"]) for n, kw in fakes.calls if n in ("deploy", "migrate")
    ]
    assert handed == [("staging", pinned), ("production", pinned), ("production", pinned)]


def test_a_release_serving_on_swarm_is_found_through_the_platform(
    fakes: Fakes, tmp_path: Path
) -> None:
    """The re-run asks production's platform (a Swarm's tasks), not a Compose target."""
    context = ctx(config=swarm_production(tmp_path))
    assert run(fakes, approved_by="tester", context=context).ok
    fakes.calls.clear()

    again = run(fakes, approved_by="tester", context=context)

    assert again.already_done and fakes.names() == []
    assert [(p.kind, p.name) for p in fakes.asked] == [("platform", "production")]


def test_a_cancelled_deploy_leaves_the_pipeline_interrupted_and_a_rerun_continues_there(
    fakes: Fakes,
) -> None:
    fakes.fail["deploy"] = DeployCancelled(
        "deploy cancelled in its migrate phase", untouched="release 1.15.1 serves again"
    )
    result = run(fakes, approved_by="tester")
    assert result.error is fakes.fail["deploy"]
    assert result.record.status == "interrupted"
    assert statuses(result)["deploy-staging"] == "failed"
    assert "rollback" not in fakes.names()

    fakes.calls.clear()
    del fakes.fail["deploy"]
    resumed = run(fakes, approved_by="tester")
    assert resumed.ok and resumed.resumed_from == "deploy-staging"
