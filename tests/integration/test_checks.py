"""smoke, validate and verify against the real reference stack (rbac-api 1.15.2 + PostgreSQL).

The shared stack at 1.15.2 for the module (tests/helpers/shared_stack.py); the tests that break
something (a revoked role, injected error lines, a slow endpoint, a stopped database) put it back
before they end.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
import requests
from click.testing import CliRunner

from deploytools.checks import suite as engine
from deploytools.checks.http import HttpClient
from deploytools.checks.results import CheckResult, Verdict
from deploytools.cli import cli
from deploytools.cli.app import AppState
from deploytools.config import Config
from deploytools.context import StepContext
from deploytools.database import Database
from deploytools.session import open_environment
from deploytools.steps import check_suites as checks_step
from deploytools.steps import report as report_step
from deploytools.store.records import ReleaseRecord, utc_now
from tests.helpers.checks_env import credentials_env, reference_config
from tests.helpers.shared_stack import _remove_volume

if TYPE_CHECKING:
    from tests.helpers.shared_stack import SharedStack
    from tests.helpers.stacks import ComposeStack, ReleaseImages

pytestmark = pytest.mark.integration


def stack_config(stack: ComposeStack, *, rate: float = 40.0, duration: float = 2.5) -> Config:
    """The reference checks against `stack`, with shorter latency tests (still 100 samples,
    the configured minimum; 40 requests/s is well within what the service serves)."""
    base = reference_config(stack)
    latency = tuple(
        dataclasses.replace(lat, rate_per_s=rate, duration_s=duration, min_samples=100)
        for lat in base.checks.latency
    )
    return dataclasses.replace(base, checks=dataclasses.replace(base.checks, latency=latency))


@dataclasses.dataclass
class Checked:
    stack: ComposeStack
    config: Config
    environ: dict[str, str]

    def run(self, suite: str, **options: object) -> checks_step.SuiteReport:
        ctx = StepContext(config=self.config)
        return checks_step.run(
            ctx,
            environment="test",
            suite=suite,
            environ=self.environ,
            **options,  # type: ignore[arg-type]
        )

    def session(self) -> engine.Session:
        client = HttpClient(self.stack.url, timeout_s=5, login=self.config.checks.login)
        return engine.Session(client, self.config.checks, self.config.thresholds, self.environ)

    def admin_token(self) -> str:
        token = self.session().token("admin")
        assert token is not None
        return token

    def user_id(self, username: str) -> int:
        users = requests.get(
            f"{self.stack.url}/users",
            headers={"Authorization": f"Bearer {self.admin_token()}"},
            timeout=5,
        ).json()["users"]
        return next(u["id"] for u in users if u["username"] == username)


@pytest.fixture(scope="module")
def checked(dtdep_stack: SharedStack) -> Checked:
    stack = dtdep_stack.reset("1.15.2")
    return Checked(stack, stack_config(stack), credentials_env(stack, "check"))


def lines(results: tuple[CheckResult, ...]) -> str:
    return "\n".join(r.line() for r in results)


def by_name(report: checks_step.SuiteReport, prefix: str) -> list[CheckResult]:
    found = [r for r in report.results if r.name.startswith(prefix)]
    assert found, f"no check named {prefix!r} in:\n{lines(report.results)}"
    return found


def test_healthy_stack_passes_smoke_validate_and_verify(checked: Checked) -> None:
    smoke = checked.run("smoke")
    assert smoke.verdict is Verdict.PASS, lines(smoke.results)
    # Smoke created the missing test users through the admin API.
    assert [r.verdict for r in by_name(smoke, "setup: create test user")] == [Verdict.PASS] * 2
    validate = checked.run("validate")
    assert validate.verdict is Verdict.PASS, lines(validate.results)
    names = {r.name for r in validate.results}
    assert {"database connected", "database migrated", "api p95"} <= names
    assert any(n.startswith("flow: after revoke") for n in names)
    migrated = by_name(validate, "database migrated")[0]
    assert migrated.measured == "revision 0002"
    p95 = by_name(validate, "api p95")[0]
    assert p95.data is not None and p95.data["n"] == 100
    assert p95.data["low_ms"] <= p95.data["value_ms"] <= p95.data["high_ms"]
    verify = checked.run("verify")
    assert verify.verdict is Verdict.PASS, lines(verify.results)
    # No setup the second time: the users exist and log in.
    assert not [r for r in verify.results if r.name.startswith("setup:")]


def test_verify_saves_its_results_in_the_current_release_record(
    checked: Checked, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`deploytools verify` through the CLI, with a release recorded in a real store (a volume
    on the engine): its results land in that record, and `report` without --results shows them.
    Early in the module, before the tests that break the stack (the verdict is not the point)."""
    volume = f"dtgap6-{secrets.token_hex(3)}-backups"
    config = dataclasses.replace(
        checked.config,
        backups=dataclasses.replace(checked.config.backups, store=f"volume:{volume}"),
    )
    ctx = StepContext(config=config)
    try:
        with open_environment(ctx, "test") as session:
            now = utc_now()
            session.history.save_release(
                ReleaseRecord(
                    id="0001", environment="test", kind="deploy", who="test", started=now,
                    image=checked.stack.container("app").image.tags[0], version="1.15.2",
                    outcome="succeeded", finished=now,
                )
            )  # fmt: skip
        monkeypatch.setattr(AppState, "config", lambda self: config)
        invoked = CliRunner().invoke(
            cli, ["--json", "verify", "--env", "test"], env=checked.environ
        )
        assert invoked.exit_code in (0, 1), invoked.output
        out = json.loads(invoked.stdout)
        result = out["result"] if out["ok"] else out["error"]["facts"]["report"]
        assert result["recorded"] == "saved in release record 0001 of test"
        with open_environment(ctx, "test") as session:
            [stored] = session.history.releases()
        document = report_step.gather(ctx, environment="test")
    finally:
        _remove_volume(checked.stack.client, volume)  # with the store's kept helper
    [summary] = stored.checks
    assert summary["suite"] == "verify" and summary["verdict"] == result["verdict"]
    keys = ("name", "verdict", "measured", "threshold")
    assert [[r[k] for k in keys] for r in summary["results"]] == [
        [r[k] for k in keys] for r in result["results"]
    ]
    assert {"database migrated", "api p95"} <= {r["name"] for r in summary["results"]}
    p95 = next(m for m in document.metrics if m.metric == "API Response (p95)")
    assert p95.source == "api p95 on GET /documents (verify)" and p95.measured != "not measured"


def test_role_revoked_behind_the_checks_back_fails_rbac_naming_the_route(
    checked: Checked,
) -> None:
    engine.ensure_users(checked.session())  # the test users exist, whatever ran before
    viewer_id = checked.user_id("check-viewer")
    headers = {"Authorization": f"Bearer {checked.admin_token()}"}
    revoked = requests.delete(
        f"{checked.stack.url}/users/{viewer_id}/roles/viewer", headers=headers, timeout=5
    )
    assert revoked.status_code == 200, revoked.text
    try:
        report = checked.run("smoke")
    finally:
        requests.post(
            f"{checked.stack.url}/users/{viewer_id}/roles",
            json={"role": "viewer"},
            headers=headers,
            timeout=5,
        ).raise_for_status()
    assert report.verdict is Verdict.FAIL
    failed = {r.name: r for r in report.failed}
    rbac = failed["rbac: viewer (viewer) GET /documents -> 200"]
    assert "viewer got 403 on GET /documents, want 200" in rbac.detail
    assert "documents:read" in rbac.detail
    # The denials the viewer should get still hold.
    assert "rbac: viewer (viewer) POST /documents -> 403" not in failed


def test_error_lines_in_the_logs_fail_the_log_scan(checked: Checked) -> None:
    since = datetime.now(UTC)
    time.sleep(1.1)  # log timestamps have one-second granularity in `since`
    app = checked.stack.container("app")
    code, output = app.exec_run(
        [
            "sh",
            "-c",
            'echo \'{"level": "ERROR", "message": "injected by test_checks"}\' > /proc/1/fd/1',
        ]
    )
    assert code == 0, output
    report = checked.run("verify", since=since)
    failed = [r for r in report.failed]
    assert [r.name for r in failed] == [f"logs: no errors in {app.name}"], lines(report.results)
    assert "injected by test_checks" in failed[0].detail
    assert failed[0].measured.startswith("1 error lines")


def test_slow_endpoint_fails_p95(checked: Checked) -> None:
    stack = checked.stack
    stack.up("app", env={"RBAC_API_SLOW_MS": "300"})
    try:
        session = checked.session()
        lat = next(lat for lat in checked.config.checks.latency if "smoke" in lat.suites)
        lat = dataclasses.replace(lat, rate_per_s=20.0, duration_s=5.0)
        result, errors = engine.latency(session, lat)
    finally:
        stack.up("app", env={"RBAC_API_SLOW_MS": "0"})
    assert result.verdict is Verdict.FAIL, result.line()
    assert result.data is not None and result.data["n"] == 100
    assert result.data["low_ms"] >= 300
    assert "over 200" in result.detail
    assert errors.verdict is Verdict.PASS, errors.line()


def test_stopped_database_fails_the_database_check(checked: Checked) -> None:
    stack = checked.stack
    stack.run_compose("stop", "db")
    try:
        report = checked.run("smoke")
    finally:
        stack.run_compose("start", "db")
        stack.wait_healthy("db")
        stack.wait_healthy("app")
    db = by_name(report, "database connected")[0]
    assert db.verdict is Verdict.FAIL
    assert db.detail.startswith("the service cannot reach its database: GET /health: status 503")
    assert "database.reachable is False" in db.detail


def test_previous_release_passes_the_smoke_checks_on_the_new_schema(
    checked: Checked, release_images: ReleaseImages
) -> None:
    previous = release_images["1.15.1"]
    ctx = StepContext(config=checked.config)
    session = checked.session()
    results = checks_step.backward_compatibility(ctx, "test", previous, session)
    assert results, "no compatibility results"
    assert all(r.name.startswith(f"compat {previous}: ") for r in results)
    assert all(r.verdict is Verdict.PASS for r in results), lines(tuple(results))
    names = {r.name.removeprefix(f"compat {previous}: ") for r in results}
    assert {
        "database connected",
        "login works",
        "rbac: viewer (viewer) GET /documents -> 200",
    } <= names
    # The temporary container is gone.
    leftovers = checked.stack.client.containers.list(
        all=True, filters={"label": f"deploytools.compat={checked.stack.project}"}
    )
    assert leftovers == []


def test_previous_image_auto_without_a_recorded_release_is_not_applicable(
    checked: Checked,
) -> None:
    volume = f"{checked.stack.project}-backups"
    config = dataclasses.replace(
        checked.config,
        backups=dataclasses.replace(checked.config.backups, store=f"volume:{volume}"),
    )
    said: list[str] = []
    try:
        image, why = checks_step.previous_release_image(
            StepContext(config=config, progress=said.append), "test"
        )
    finally:
        _remove_volume(checked.stack.client, volume)  # with the store's kept helper
    assert image is None
    assert why == "not applicable: no earlier release is recorded for test"


def test_the_revision_read_from_alembic_version_matches_the_heads(checked: Checked) -> None:
    """revision_from = "database": the health answer's revision is ignored and alembic_version
    is read with psql in the database container, as for a service that does not report it."""
    db = checked.config.checks.database
    assert db is not None
    from_table = dataclasses.replace(
        db, revision_from="database", revision_field="deploytools.no.such.field"
    )
    config = dataclasses.replace(
        checked.config, checks=dataclasses.replace(checked.config.checks, database=from_table)
    )
    session = checked.session()
    target = StepContext(config).target("test")

    results = engine.database(
        session,
        from_table,
        suite="verify",
        heads=lambda: engine.head_revisions(
            target, config.project.app_service, from_table.revision_command
        ),
        stored_revision=lambda: Database.of(target).revision(),
    )
    migrated = next(r for r in results if r.name == "database migrated")
    assert migrated.verdict is Verdict.PASS, migrated.line()
    health = requests.get(f"{checked.stack.url}/health", timeout=5).json()
    assert migrated.measured == f"revision {health['database']['alembic_revision']}"


def test_verify_reads_the_app_containers_cpu_and_memory(checked: Checked) -> None:
    report = checked.run("verify")
    names = {r.name for r in report.results}
    app = checked.stack.container("app").name
    assert f"cpu {app}" in names and f"memory {app}" in names, lines(report.results)
