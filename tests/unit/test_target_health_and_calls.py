"""Target's speed, faked at the engine's boundary: a container's own healthcheck run while the
engine still says "starting" (the program and shell the engine would run; a pass ends the wait
and every reader sees it healthy; a failure or an exec that cannot run does not), and the
Compose calls saved (`defines` reads the services once, `stop` asks the engine).
tests/integration/test_target.py runs the healthcheck on the real engine."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from deploytools.engine import Container
from deploytools.engine.exec import ExecResult
from deploytools.errors import DeadlineExceeded, ExternalCommandFailed
from deploytools.target import (
    PROBE_TIMEOUT_S,
    probe_health,
    service_state,
    wait_until_healthy,
)

SECOND = 1_000_000_000
PG_CHECK = {"Test": ["CMD-SHELL", 'pg_isready -U "$POSTGRES_USER"'], "Interval": 30 * SECOND}


def _attrs(status: str, health: str | None, healthcheck: dict[str, Any] | None) -> dict[str, Any]:
    state: dict[str, Any] = {"Status": status, "StartedAt": "2026-01-01T00:00:00Z"}
    if health is not None:
        state["Health"] = {"Status": health, "Log": []}
    config: dict[str, Any] = {"Image": "db:16"}
    if healthcheck is not None:
        config["Healthcheck"] = healthcheck
    return {"State": state, "Config": config, "Image": "sha256:db"}


class FakeSdk:
    """The SDK's container: each `reload` moves to the next of `states` (the last one stays)."""

    def __init__(self, states: Sequence[dict[str, Any]]) -> None:
        self.states, self.attrs = list(states), states[0]
        self.id, self.name, self.labels = "c0ffee", "app-1", {}
        self.image = SimpleNamespace(id="sha256:db", labels={}, attrs={})

    @property
    def status(self) -> str:
        return str(self.attrs["State"]["Status"])

    def reload(self) -> None:
        if len(self.states) > 1:
            self.states.pop(0)
        self.attrs = self.states[0]


class Scripted(Container):
    """A container whose exec'd programs give the scripted results in turn (an exception is
    raised), recording what ran and with which deadline."""

    def __init__(self, sdk: FakeSdk, results: Sequence[ExecResult | Exception] = ()) -> None:
        super().__init__(sdk)
        self.results = list(results)
        self.ran: list[tuple[list[str], float]] = []

    def exec(self, argv: Sequence[str], **options: Any) -> ExecResult:
        self.ran.append((list(argv), options["timeout_s"]))
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


def passes() -> ExecResult:
    return ExecResult(0, b"/var/run/postgresql:5432 - accepting connections\n", b"")


def fails() -> ExecResult:
    return ExecResult(2, b"", b"127.0.0.1:5432 - no response\n")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize(
    ("healthcheck", "shell", "argv"),
    [
        ({"Test": ["CMD", "pg_isready", "-q"]}, None, ["pg_isready", "-q"]),
        ({"Test": ["CMD-SHELL", "curl -f x"]}, None, ["/bin/sh", "-c", "curl -f x"]),
        ({"Test": ["CMD-SHELL", "exit 0"]}, ["/bin/bash", "-ec"], ["/bin/bash", "-ec", "exit 0"]),
        ({"Test": ["NONE"]}, None, None),
        ({"Test": []}, None, None),
        (None, None, None),
    ],
)
def test_the_program_run_is_the_engines_own_healthcheck(
    healthcheck: dict[str, Any] | None, shell: list[str] | None, argv: list[str] | None
) -> None:
    attrs = _attrs("running", "starting", healthcheck)
    if shell is not None:
        attrs["Config"]["Shell"] = shell
    assert Container(FakeSdk([attrs])).healthcheck_argv() == argv


def test_a_pass_while_the_engine_says_starting_ends_the_wait_before_its_next_probe() -> None:
    starting = _attrs("running", "starting", PG_CHECK)
    container = Scripted(FakeSdk([starting]), [fails(), fails(), passes()])
    clock = Clock()
    state = wait_until_healthy(container, timeout_s=60, clock=clock, sleep=clock.sleep)
    assert state.healthy and state.health == "healthy" and state.health_probed
    assert state.health_text == "healthy (probed)"
    assert len(container.ran) == 3  # one run per poll, until the first pass
    assert container.ran[0][0] == ["/bin/sh", "-c", 'pg_isready -U "$POSTGRES_USER"']
    assert clock.now < 30  # the engine's first scheduled probe was not waited for


def test_the_engines_healthy_needs_no_run_and_a_container_without_healthcheck_gets_none() -> None:
    for attrs in (_attrs("running", "healthy", PG_CHECK), _attrs("running", None, None)):
        container = Scripted(FakeSdk([attrs]))
        clock = Clock()
        assert wait_until_healthy(container, timeout_s=5, clock=clock, sleep=clock.sleep).healthy
        assert container.ran == []


def test_an_unhealthy_container_is_not_probed_and_waits_for_the_engine() -> None:
    container = Scripted(
        FakeSdk([_attrs("running", "unhealthy", PG_CHECK), _attrs("running", "healthy", PG_CHECK)])
    )
    clock = Clock()
    state = wait_until_healthy(container, timeout_s=60, clock=clock, sleep=clock.sleep)
    assert state.health == "healthy" and not state.health_probed
    assert container.ran == []


def test_failing_runs_meet_the_deadline_with_the_last_runs_output_in_the_message() -> None:
    container = Scripted(FakeSdk([_attrs("running", "starting", PG_CHECK)]), [fails()] * 100)
    clock = Clock()
    with pytest.raises(DeadlineExceeded) as caught:
        wait_until_healthy(container, timeout_s=5, clock=clock, sleep=clock.sleep)
    assert "not healthy after 5 s (state running, health starting)" in caught.value.message
    assert "exit 2: 127.0.0.1:5432 - no response" in caught.value.message
    assert caught.value.facts["last_health_log"] == "exit 2: 127.0.0.1:5432 - no response"
    assert all(timeout <= PROBE_TIMEOUT_S for _, timeout in container.ran)


def test_an_exec_that_cannot_run_or_hangs_is_not_a_pass() -> None:
    starting = _attrs("running", "starting", PG_CHECK)
    gone = ExternalCommandFailed("running pg_isready in container c0ffee failed: not running")
    hung = DeadlineExceeded("pg_isready in container c0ffee gave no sign of life for 5 s")
    for error in (gone, hung):
        probe = probe_health(Scripted(FakeSdk([starting]), [error]))
        assert probe is not None and not probe.passed and probe.output == error.message


def test_the_run_gets_the_healthchecks_own_timeout_when_shorter() -> None:
    check = {**PG_CHECK, "Timeout": 2 * SECOND}
    container = Scripted(FakeSdk([_attrs("running", "starting", check)]), [passes()])
    assert probe_health(container) is not None
    assert container.ran[0][1] == 2.0


def test_every_reader_of_health_sees_a_passing_starting_container_healthy() -> None:
    """`status`, the deploy's "already serving" check and the pipeline's resume read
    service_state: a container the wait just called healthy is not "starting" to them."""
    starting = _attrs("running", "starting", PG_CHECK)
    assert service_state(Scripted(FakeSdk([starting]), [passes()])).healthy
    assert not service_state(Scripted(FakeSdk([starting]), [fails()])).healthy
    unhealthy = Scripted(FakeSdk([_attrs("running", "unhealthy", PG_CHECK)]))
    assert not service_state(unhealthy).healthy and unhealthy.ran == []


def test_the_compose_services_are_listed_once_per_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """`defines` asks Compose once (a v1 call costs seconds), then answers from what it read."""
    from collections.abc import Mapping
    from pathlib import Path

    from deploytools.commands import compose as compose_cmd
    from deploytools.config import load_config
    from deploytools.engine import process
    from deploytools.target import Target

    calls: list[tuple[str, ...]] = []

    def runner(
        argv: Sequence[str], *, env: Mapping[str, str], timeout: float, cwd: str | None = None
    ) -> process.ProcessResult:
        calls.append(tuple(argv))
        return process.ProcessResult(tuple(argv), 0, "db\napp\nproxy\n", "")

    monkeypatch.setattr(
        "deploytools.target.detect_compose",
        lambda host: compose_cmd.ComposeCli(prefix=("docker-compose",), version="1.29.2"),
    )
    config = load_config(Path(__file__).resolve().parents[2] / "deploy.toml")
    target = Target.for_environment(config, "staging", runner=runner)
    assert target.defines("proxy") and target.defines("db") and not target.defines("worker")
    assert len(calls) == 1 and calls[0][-2:] == ("config", "--services")


def test_stop_asks_the_engine_not_compose(monkeypatch: pytest.MonkeyPatch) -> None:
    """`stop` stops the services' running containers through the engine (dependents, named
    last, first), with Compose's stop timeout; a container removed meanwhile is stopped enough,
    an engine refusal is an error naming the container."""
    from pathlib import Path

    from deploytools.config import load_config
    from deploytools.engine.errors import EngineAPIError, NotFound
    from deploytools.target import STOP_TIMEOUT_S, Target

    stopped: list[tuple[str, int]] = []

    class Stoppable:
        def __init__(self, name: str, error: Exception | None = None) -> None:
            self.name, self.error = name, error

        def stop(self, *, timeout_s: int) -> None:
            if self.error is not None:
                raise self.error
            stopped.append((self.name, timeout_s))

    class Engine:
        def __init__(self, by_service: dict[str, list[Stoppable]]) -> None:
            self.by_service, self.asked = by_service, []

        def project_containers(
            self, project: str, service: str | None, *, include_stopped: bool
        ) -> list[Stoppable]:
            self.asked.append((service, include_stopped))
            return self.by_service.get(service or "", [])

    def no_compose(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("stop ran Compose")

    config = load_config(Path(__file__).resolve().parents[2] / "deploy.toml")
    target = Target.for_environment(config, "staging", runner=no_compose)
    engine = Engine({"db": [Stoppable("db-1")], "app": [Stoppable("app-1"), Stoppable("app-2")]})
    target._engine = engine  # type: ignore[assignment]
    target.stop(["db", "app"], what="stopping the stack")
    assert stopped == [("app-1", STOP_TIMEOUT_S), ("app-2", STOP_TIMEOUT_S), ("db-1", 10)]
    assert engine.asked == [("app", False), ("db", False)]  # running (and paused) ones only

    target._engine = Engine({"app": [Stoppable("app-1", NotFound("gone"))]})  # type: ignore[assignment]
    target.stop(["app"], what="stopping the app")
    refusing = Stoppable("app-1", EngineAPIError("500", explanation="cannot kill container"))
    target._engine = Engine({"app": [refusing]})  # type: ignore[assignment]
    with pytest.raises(ExternalCommandFailed) as caught:
        target.stop(["app"], what="stopping the app")
    assert caught.value.message == (
        "stopping the app failed on environment staging: stopping container app-1: "
        "cannot kill container"
    )


def test_a_running_database_not_healthy_yet_is_waited_for_not_started() -> None:
    """A deploy right after `compose up` finds the database running but still initialising
    (its server restarts once): it waits for its healthcheck before its first psql."""
    from deploytools.session import start_database

    db = Scripted(FakeSdk([_attrs("running", "starting", PG_CHECK)]), [fails(), passes()])
    started: list[list[str]] = []
    target = SimpleNamespace(
        name="production",
        running=lambda service: [db] if service == "db" else [],
        start=lambda services, **kwargs: started.append(list(services)),
    )
    config = SimpleNamespace(
        project=SimpleNamespace(database_service="db"),
        deploy=SimpleNamespace(health_timeout_s=30.0),
    )
    ctx = SimpleNamespace(config=config, progress=lambda message: None)
    assert start_database(ctx, target) is False  # type: ignore[arg-type]
    assert started == []
    assert len(db.ran) == 2  # polled until its healthcheck passed
