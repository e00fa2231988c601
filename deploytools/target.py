"""The Docker side of an environment: its engine, its Compose project, its containers.

An environment is an engine (the local one, or `ssh://user@host`, `tcp://host:port`, with the
same meaning as DOCKER_HOST) plus a Compose project on it. Steps reach the environment through
`Target`: the engine (typed, `deploytools.engine`), Compose (argv from
`deploytools.commands.compose`, run by the engine's process runner), and the services' containers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deploytools.commands import compose as compose_cmd
from deploytools.config import Config, EnvironmentConfig
from deploytools.engine import process
from deploytools.engine.client import (
    ONEOFF_LABEL,
    PROJECT_LABEL,
    SERVICE_LABEL,
    Container,
    Engine,
)
from deploytools.engine.compose import compose_env as _compose_env
from deploytools.engine.compose import detect_compose, referenced_variables
from deploytools.engine.connection import CONNECT_TIMEOUT_S, connect
from deploytools.engine.errors import EngineError, NotFound
from deploytools.engine.exec import DEFAULT_TIMEOUT_S, ExecResult
from deploytools.engine.process import ProcessResult, Runner, default_runner
from deploytools.errors import (
    ConfigError,
    DeadlineExceeded,
    DeployError,
    EnvironmentUnreachable,
    ExternalCommandFailed,
)
from deploytools.platforms import exec_in_running

# For the static check at the end of the module only (mypy: Target implements Platform).
if TYPE_CHECKING:
    from deploytools.platforms import Platform

VERSION_LABEL = "org.opencontainers.image.version"
REVISION_LABEL = "org.opencontainers.image.revision"
#: The longest a run of a container's own healthcheck program (`probe_health`) may stay silent;
#: shorter still when the healthcheck names a shorter timeout, or the wait's deadline is closer.
PROBE_TIMEOUT_S = 5.0
#: Seconds a stopped container has to exit after its stop signal before it is killed (as
#: `compose stop --timeout`, deploytools.commands.compose.stop's default).
STOP_TIMEOUT_S = 10


@dataclass(frozen=True)
class ServiceState:
    """One container of a Compose project, as `deploytools status` shows it."""

    service: str
    container: str
    image: str
    image_id: str
    version: str | None
    revision: str | None
    state: str
    health: str | None
    started_at: str
    repo_digests: tuple[str, ...] = ()
    #: The engine still said "starting", and the container's own healthcheck, run now, passed:
    #: `health` is then "healthy" (the engine says so at its next probe, up to an interval on).
    health_probed: bool = False
    #: The node the container runs on (a Swarm task's); "" on one engine.
    node: str = ""

    @property
    def healthy(self) -> bool:
        return self.state == "running" and self.health in (None, "healthy")

    @property
    def health_text(self) -> str:
        """The health as `deploytools status` shows it."""
        if self.health_probed:
            return "healthy (probed)"
        return self.health or "no healthcheck"


@dataclass
class Target:
    """One environment: its engine (connected lazily, once) and its Compose project.

    Steps ask the target for what they need: Compose commands on the stack (`compose`), the
    services' containers (`containers`, `running`), a program run in a service
    (`exec_in_service`); the engine itself (`engine`) for images and one-off containers.
    """

    config: Config
    environment: EnvironmentConfig
    runner: Runner = default_runner
    _engine: Engine | None = field(default=None, init=False, repr=False)
    #: The services the Compose files define, read once (a Compose call costs 1-3 s with v1;
    #: the files do not change under a running command).
    _defined: frozenset[str] | None = field(default=None, init=False, repr=False)

    @classmethod
    def for_environment(cls, config: Config, name: str, runner: Runner = default_runner) -> Target:
        return cls(config=config, environment=config.environment(name), runner=runner)

    @property
    def name(self) -> str:
        return self.environment.name

    @property
    def project(self) -> str:
        return self.environment.compose_project

    @property
    def engine(self) -> Engine:
        """The environment's engine, connected on first use (EnvironmentUnreachable if not)."""
        if self._engine is None:
            self._engine = connect(self.environment.docker_host)
        return self._engine

    # -- Compose ---------------------------------------------------------------------------

    def compose_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment a Compose child runs with, and nothing more: the allow-list and the
        engine's connection, the variables the Compose files interpolate and the environment's
        named secrets (from ours, when set), the environment's `variables`, then `extra`."""
        passed = {
            *self.environment.secrets,
            *referenced_variables(self.config.compose_file_paths()),
        }
        return _compose_env(
            self.environment.docker_host, self.environment.variables, extra, passed=sorted(passed)
        )

    def compose_files(self) -> list[str]:
        files = [str(p) for p in self.config.compose_file_paths()]
        missing = [f for f in files if not Path(f).exists()]
        if missing:
            raise ConfigError(
                f"Compose file {missing[0]} (project.compose_files) does not exist",
                untouched="nothing was done",
            )
        return files

    def compose(
        self,
        build: Callable[[compose_cmd.ComposeCli, str, list[str]], list[str]],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 300,
        what: str = "docker compose",
    ) -> ProcessResult:
        """Runs one Compose command built by `build(cli, project, files)`; raises on failure."""
        cli = detect_compose(self.environment.docker_host)
        argv = build(cli, self.project, self.compose_files())
        child_env = self.compose_env(env)
        return run_checked(
            lambda: self.runner(argv, env=child_env, timeout=timeout, cwd=str(self.config.root)),
            argv=argv,
            env=child_env,
            environment=self.environment,
            timeout=timeout,
            what=what,
        )

    # -- Containers ------------------------------------------------------------------------

    def containers(
        self, service: str | None = None, *, include_stopped: bool = True
    ) -> list[Container]:
        """The project's service containers (one-off `run` containers excluded)."""
        return self.engine.project_containers(
            self.project, service, include_stopped=include_stopped
        )

    def running(self, service: str) -> list[Container]:
        """The service's running containers."""
        return [c for c in self.containers(service) if c.status == "running"]

    def exec_in_service(
        self,
        service: str,
        argv: Sequence[str],
        *,
        stdin: Iterable[bytes] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> ExecResult:
        """Run argv in the service's first running container; EnvironmentUnreachable when none
        runs."""
        return exec_in_running(self, service, argv, stdin=stdin, timeout_s=timeout_s)

    # -- The platform's verbs (deploytools.platforms.Platform) --------------------------------

    def defines(self, service: str) -> bool:
        """Whether the Compose files define `service` (the files are read once per Target)."""
        if self._defined is None:
            done = self.compose(compose_cmd.service_names, what="listing the Compose services")
            self._defined = frozenset(done.stdout.split())
        return service in self._defined

    def start(
        self,
        services: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        what: str,
        timeout_s: float = 300,
    ) -> None:
        """`compose up --no-deps` of `services`: started, or recreated when their
        configuration (the image variable in `env`, say) changed."""
        self.compose(
            lambda cli, project, files: compose_cmd.up(cli, project, files, services, no_deps=True),
            env=env,
            timeout=timeout_s,
            what=what,
        )

    def start_beside(
        self, service: str, *, count: int, env: Mapping[str, str] | None = None, what: str
    ) -> list[Container]:
        """New containers of `service` beside the running ones (which are not touched), up to
        `count` containers in all; the new ones."""
        known = {c.id for c in self.containers(service)}
        self.compose(
            lambda cli, project, files: compose_cmd.up(
                cli,
                project,
                files,
                [service],
                no_deps=True,
                no_recreate=True,
                scale={service: count},
            ),
            env=env,
            what=what,
        )
        return [c for c in self.containers(service) if c.id not in known]

    def stop(self, services: Sequence[str], *, what: str) -> None:
        """What `compose stop` of `services` does (their containers stay, stopped; the last
        named first, as Compose stops dependents first), asked of the engine directly: a
        Compose v1 call costs 1-3 s, time a recreate deploy's app is down for."""
        for service in reversed(services):
            for container in self.containers(service, include_stopped=False):
                try:
                    container.stop(timeout_s=STOP_TIMEOUT_S)
                except NotFound:
                    continue  # removed meanwhile: stopped all the same
                except EngineError as error:
                    raise ExternalCommandFailed(
                        f"{what} failed on environment {self.name}: stopping container "
                        f"{container.name}: {error.explanation}",
                        hint=f"look at `deploytools status --env {self.name}`",
                        facts={"container": container.name, "service": service},
                    ) from error

    @contextlib.contextmanager
    def paused(self, service: str, *, what: str) -> Iterator[None]:
        """The service's running containers stopped for the block and the very same started
        again (not `compose up`, which would recreate them from the files' current
        variables), also when the stop itself is interrupted (Ctrl-C, a cancelled job)."""
        running = self.running(service)
        try:
            for container in running:
                container.stop(timeout_s=STOP_TIMEOUT_S)
            yield
        finally:
            start_again(running, stop_timeout_s=STOP_TIMEOUT_S)

    def run_once(
        self,
        service: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        container_env: Mapping[str, str] | None = None,
        timeout_s: float,
        what: str,
    ) -> ProcessResult:
        """`command` in a one-off container of `service`, removed when it exits; raises when it
        fails. `env` is the stack's (the image variable, say); `container_env` is set in the
        container, by name only: its values never appear in an argv."""
        inside = dict(container_env or {})
        return self.compose(
            lambda cli, project, files: compose_cmd.run_once(
                cli, project, files, service, command, env=sorted(inside)
            ),
            env={**(env or {}), **inside},
            timeout=timeout_s,
            what=what,
        )

    def services(self) -> list[ServiceState]:
        """What runs in this environment, one entry per container, sorted by service."""
        states = [service_state(c) for c in self.containers()]
        return sorted(states, key=lambda s: (s.service, s.container))


def start_again(containers: Sequence[Container], *, stop_timeout_s: int) -> None:
    """Start the very same `containers` again after a stop. One still running may be in the
    middle of an interrupted stop, which the engine carries on with and which would take it
    down after a plain start (a no-op on a running container): it is stopped first (its
    requests get `stop_timeout_s`), then started."""
    for container in containers:
        with contextlib.suppress(NotFound):
            container.reload()
            if container.status == "running":
                container.stop(timeout_s=stop_timeout_s)
            container.start()


def run_checked(
    run: Callable[[], ProcessResult],
    *,
    argv: Sequence[str],
    env: Mapping[str, str],
    environment: EnvironmentConfig,
    timeout: float,
    what: str,
    install_hint: str = "install the compose plugin or Debian's docker-compose package",
) -> ProcessResult:
    """`run()` (a child of the environment's: Compose, the docker CLI), its failures turned
    into DeployErrors that name `what` and the environment, its named secrets masked in the
    output they keep."""
    name = environment.name
    try:
        done = run()
    except process.ProcessTimedOut:
        raise DeadlineExceeded(
            f"{what} did not finish within {timeout:.0f} s on environment {name}",
            hint="look at `deploytools status --env " + name + "` and the engine's logs",
            facts={"argv": list(argv)},
        ) from None
    except process.ProgramNotFound as missing:
        raise EnvironmentUnreachable(
            f"{what} cannot run: {missing.program} is not installed",
            untouched="nothing was done",
            hint=install_hint,
        ) from None
    if done.returncode != 0:
        hide = _secret_values(env, environment.secrets)
        stderr, stdout = _masked(done.stderr, hide), _masked(done.stdout, hide)
        detail = (stderr or stdout).strip().splitlines()
        raise ExternalCommandFailed(
            f"{what} failed on environment {name} (exit {done.returncode}): "
            + (detail[-1] if detail else "no output"),
            facts={"argv": list(argv), "stderr": stderr[-4000:], "stdout": stdout[-4000:]},
        )
    return done


def _secret_values(env: Mapping[str, str], names: Iterable[str]) -> list[str]:
    """The values of the named secrets in `env` long enough to be told from ordinary words."""
    return sorted({env[n] for n in names if len(env.get(n, "")) >= 4}, key=len, reverse=True)


def _masked(text: str, values: Sequence[str]) -> str:
    for value in values:
        text = text.replace(value, "***")
    return text


def service_state(container: Container, *, probe: bool = True) -> ServiceState:
    """What `container` is, as last read from the engine. While the engine says its health is
    "starting", its healthcheck is run once now (`probe`, as every reader of health does: the
    engine's status lags the app by up to one probe interval, 30 s by default) and a pass
    makes it healthy."""
    state = _engine_state(container)
    if probe and state.state == "running" and state.health == "starting":
        result = probe_health(container)
        if result is not None and result.passed:
            return dataclasses.replace(state, health="healthy", health_probed=True)
    return state


def _engine_state(container: Container) -> ServiceState:
    attrs = container.attrs
    state = attrs.get("State", {})
    labels = container.labels
    image_id = attrs.get("Image", "")
    image_labels: Mapping[str, str] = {}
    digests: tuple[str, ...] = ()
    image = container.image()
    if image is not None:
        image_labels = image.labels
        digests = image.repo_digests
    return ServiceState(
        service=labels.get(SERVICE_LABEL, container.name),
        container=container.name,
        image=attrs.get("Config", {}).get("Image", ""),
        image_id=image_id,
        version=image_labels.get(VERSION_LABEL) or labels.get(VERSION_LABEL),
        revision=image_labels.get(REVISION_LABEL),
        state=state.get("Status", "unknown"),
        health=(state.get("Health") or {}).get("Status"),
        started_at=state.get("StartedAt", ""),
        repo_digests=digests,
    )


@dataclass(frozen=True)
class Probe:
    """One run of a container's healthcheck program: whether it passed, and its output."""

    passed: bool
    output: str


def probe_health(container: Container, *, timeout_s: float = PROBE_TIMEOUT_S) -> Probe | None:
    """Run `container`'s own healthcheck program once, now (None when it has no healthcheck).

    The engine runs it every interval and changes the health status only then: a container
    whose app is ready waits up to an interval (30 s by default; engines before 25.0 have no
    faster start interval) to be called healthy. The same program passing now is the engine's
    own criterion for "healthy", met. A program that fails, hangs past the deadline or cannot
    run (the container stopped) has not passed."""
    limit = min(timeout_s, container.healthcheck_timeout_s() or timeout_s)
    try:
        result = container.probe_health(timeout_s=max(limit, 0.5))
    except DeployError as error:
        return Probe(False, error.message)
    if result is None:
        return None
    output = " ".join(result.output().decode("utf-8", "replace").split())
    return Probe(result.exit_code == 0, f"exit {result.exit_code}: {output[:300] or 'no output'}")


def last_health_log(container: Container) -> str:
    """The output of the container's most recent health probe, for error messages."""
    log = ((container.attrs.get("State") or {}).get("Health") or {}).get("Log") or []
    if not log:
        return "no health probe has run yet"
    last = log[-1]
    output = " ".join(str(last.get("Output", "")).split())
    return f"exit {last.get('ExitCode')}: {output[:300] or 'no output'}"


def wait_until_healthy(
    container: Container,
    *,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    first_delay_s: float = 0.2,
    max_delay_s: float = 0.5,
) -> ServiceState:
    """Wait until `container` is running and healthy (or running, if it has no healthcheck).

    Polls with exponential backoff up to a deadline. The backoff stops at half a second: the
    engine's answer is cheap, and a longer step is time a deploy or rollback (goal: 10 s)
    waits after its container is already healthy. While the engine says "starting", each poll
    also runs the container's healthcheck program (`probe_health`): its first pass ends the
    wait, without waiting for the engine's next scheduled probe. Raises DeadlineExceeded
    naming the container and its last health log when the deadline passes, or at once when
    the container exits.
    """
    deadline = clock() + timeout_s
    delay = first_delay_s
    probe: Probe | None = None
    while True:
        container.reload()
        current = _engine_state(container)
        if current.healthy:
            return current
        if current.state == "running" and current.health == "starting":
            probe = probe_health(container, timeout_s=min(PROBE_TIMEOUT_S, deadline - clock()))
            if probe is not None and probe.passed:
                return dataclasses.replace(current, health="healthy", health_probed=True)
        if current.state in ("exited", "dead"):
            code = container.attrs.get("State", {}).get("ExitCode")
            raise DeadlineExceeded(
                f"container {container.name} exited (code {code}) instead of becoming healthy",
                hint=f"read its logs: docker logs {container.name}",
                facts={"container": container.name, "state": current.state, "exit_code": code},
            )
        if clock() >= deadline:
            last = last_health_log(container) if probe is None else probe.output
            raise DeadlineExceeded(
                f"container {container.name} is not healthy after {timeout_s:.0f} s "
                f"(state {current.state}, health {current.health or 'none'}); "
                f"last health check: {last}",
                hint=f"read its logs: docker logs {container.name}",
                facts={
                    "container": container.name,
                    "state": current.state,
                    "health": current.health,
                    "last_health_log": last,
                },
            )
        sleep(min(delay, max(0.0, deadline - clock())))
        delay = min(delay * 2, max_delay_s)


if TYPE_CHECKING:

    def _a_target_is_a_platform(target: Target) -> Platform:
        """mypy checks here that Target implements the Platform protocol."""
        return target


__all__ = [
    "CONNECT_TIMEOUT_S",
    "ONEOFF_LABEL",
    "PROBE_TIMEOUT_S",
    "PROJECT_LABEL",
    "REVISION_LABEL",
    "SERVICE_LABEL",
    "VERSION_LABEL",
    "Probe",
    "Runner",
    "ServiceState",
    "Target",
    "connect",
    "default_runner",
    "detect_compose",
    "last_health_log",
    "probe_health",
    "service_state",
    "wait_until_healthy",
]
