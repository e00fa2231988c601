"""The check engine and the smoke/validate/verify step against a local fake service."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploytools.checks import suite as engine
from deploytools.checks.http import Answer, HttpClient, json_mismatches
from deploytools.checks.load import open_load
from deploytools.checks.results import Verdict
from deploytools.config import Config, LatencyCheck, ProbeCheck, parse_config
from deploytools.context import StepContext
from deploytools.errors import UsageError
from deploytools.steps import check_suites as checks_step
from tests.fakes.rbac_service import CONFIG, ENVIRON, FakeState, fake_service


@pytest.fixture
def state() -> FakeState:
    return FakeState(users={"root": ("admin-password-123", ["admin"])})


@pytest.fixture
def base_url(state: FakeState) -> Iterator[str]:
    with fake_service(state) as url:
        yield url


@pytest.fixture
def config(base_url: str, tmp_path: Path) -> Config:
    return parse_config(CONFIG.replace("BASE_URL", base_url), tmp_path / "deploy.toml")


def session(config: Config, base_url: str) -> engine.Session:
    client = HttpClient(base_url, timeout_s=2, login=config.checks.login)
    return engine.Session(client, config.checks, config.thresholds, ENVIRON)


def test_smoke_on_a_healthy_service_creates_the_viewer_and_passes(
    config: Config, state: FakeState
) -> None:
    report = checks_step.run(
        StepContext(config), environment="local", suite="smoke", environ=ENVIRON
    )
    lines = "\n".join(r.line() for r in report.results)
    assert report.verdict is Verdict.PASS, lines
    assert state.users["vera"] == ("viewer-password-123", ["viewer"])
    names = [r.name for r in report.results]
    assert names[:3] == ["setup: create test user viewer (viewer)", "database connected", "health"]
    assert "rbac: viewer (viewer) GET /documents -> 200" in names
    p95 = next(r for r in report.results if r.name == "api p95")
    assert p95.data is not None and p95.data["n"] == 100
    # Nothing secret in what is returned.
    assert "viewer-password-123" not in repr(report)


def test_revoked_role_fails_the_rbac_check_and_names_the_route(
    config: Config, state: FakeState, base_url: str
) -> None:
    state.users["vera"] = ("viewer-password-123", [])
    result = engine.rbac(session(config, base_url), config.checks.rbac[0])
    assert result.verdict is Verdict.FAIL
    assert result.name == "rbac: viewer (viewer) GET /documents -> 200"
    assert "viewer got 403 on GET /documents, want 200" in result.detail
    assert (
        "the service says error.code=forbidden, error.message=needs documents:read" in result.detail
    )


def test_database_down_fails_the_database_check_clearly(
    config: Config, state: FakeState, base_url: str
) -> None:
    state.db_down = True
    assert config.checks.database is not None
    [result] = engine.database(
        session(config, base_url), config.checks.database, suite="smoke", heads=None
    )
    assert result.verdict is Verdict.FAIL
    assert result.detail == (
        "the service cannot reach its database: GET /health: status 503, "
        "database.reachable is False"
    )


def test_a_slow_probe_exceeds_its_budget(config: Config, state: FakeState, base_url: str) -> None:
    state.delay_s = 0.15
    result = engine.probe(session(config, base_url), config.checks.probes[0])
    assert result.verdict is Verdict.FAIL
    assert "median answer took" in result.detail and "budget 100 ms" in result.detail
    assert "(n=7)" in result.measured


def test_an_error_answer_without_the_documented_shape_fails(config: Config, base_url: str) -> None:
    s = session(config, base_url)
    shaped = engine.probe(s, ProbeCheck(name="no token", path="/me", expect_status=401))
    assert shaped.verdict is Verdict.PASS
    plain = engine.probe(s, ProbeCheck(name="plain", path="/plain-error", expect_status=500))
    assert plain.verdict is Verdict.FAIL
    assert plain.detail == "error answer lacks error.code, error.message"


def test_missing_credentials_stop_the_run_naming_the_variable(config: Config) -> None:
    environ = {k: v for k, v in ENVIRON.items() if k != "T_VIEWER_PASSWORD"}
    with pytest.raises(UsageError) as caught:
        checks_step.run(StepContext(config), environment="local", suite="smoke", environ=environ)
    assert "T_VIEWER_PASSWORD" in caught.value.message
    assert "viewer-password-123" not in caught.value.one_line()


def test_too_few_samples_make_the_latency_check_inconclusive(
    config: Config, base_url: str, state: FakeState
) -> None:
    state.users["vera"] = ("viewer-password-123", ["viewer"])
    lat = dataclasses.replace(config.checks.latency[0], duration_s=0.5)  # 50 of 100 samples
    result, _errors = engine.latency(session(config, base_url), lat)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "only 50 samples, 100 needed" in result.detail


def test_open_load_times_each_request_from_its_scheduled_start() -> None:
    """One worker, a server that takes 100 ms, 20 arrivals/s for 1 s: the queue grows, and
    the last request (due at 0.95 s, done at >= 2.0 s) shows it. A closed loop would say 100 ms."""
    import time

    def send(due: float) -> Answer:
        time.sleep(0.1)
        return Answer("GET", "/", 200, (time.perf_counter() - due) * 1000)

    load = open_load(send, rate_per_s=20, duration_s=1, concurrency=1, ok=lambda a: True)
    assert load.n == 20
    assert max(load.latencies_ms) >= 1000
    assert load.errors == 0


def test_json_expectations_distinguish_true_from_one() -> None:
    assert json_mismatches({"a": {"b": 1}}, {"a.b": True}) == ["a.b is 1, want true"]
    assert json_mismatches({"a": True}, {"a": True}) == []
    assert json_mismatches({}, {"x.y": "z"}) == ["x.y missing"]


def test_latency_check_defaults() -> None:
    lat = LatencyCheck(path="/x")
    assert (lat.rate_per_s, lat.duration_s, lat.percentile, lat.min_samples) == (20, 10, 95, 100)
