"""`deploytools smoke`, `validate` and `verify`: runbook steps 2, 3 and 6, three check suites
run by the check engine (deploytools/checks/).

    smoke     the fast subset (seconds): health, database, login, RBAC, a short latency test
    validate  everything: admin workflows, the end-to-end user flow, latency, logs, revision
    verify    after the production deploy: revision, endpoints, latency, the log scan

Which check runs in which suite is configuration ([checks] in deploy.toml, each check's
`suites`). `run` runs the checks and returns every result with the overall verdict;
`run_and_record` is the runbook step that `deploytools smoke|validate|verify` and `pipeline run`
both call: it runs them, refuses a suite with no checks, and keeps the results in the release
record. Its report's `raise_if_failed` is the one rule that turns the verdict into CheckFailed
(exit code 1): a failed check fails the suite, and so does an inconclusive one unless the caller
allows it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from deploytools import proxy_settings
from deploytools.checks import compat, containers
from deploytools.checks import suite as engine
from deploytools.checks.http import HttpClient
from deploytools.checks.results import CheckResult, Verdict, overall
from deploytools.config import FLOW_USER
from deploytools.context import StepContext
from deploytools.database import Database
from deploytools.engine.errors import EngineError
from deploytools.errors import CheckFailed, DeployError, UsageError
from deploytools.jsonable import jsonable
from deploytools.platforms.placement import running_named
from deploytools.platforms.swarm import SwarmPlatform
from deploytools.session import open_environment
from deploytools.steps import suite_record

SUITES = ("smoke", "validate", "verify")


@dataclass(frozen=True)
class SuiteReport:
    """What one run of a suite found, in order; `verdict` is the worst of them."""

    environment: str
    suite: str
    base_url: str
    started: str
    finished: str
    verdict: Verdict
    results: tuple[CheckResult, ...]
    #: Where run_and_record saved this run (a release record), or why it did not.
    recorded: str = ""

    @property
    def title(self) -> str:
        return f"{self.suite} on {self.environment}"

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.verdict is Verdict.FAIL)

    @property
    def inconclusive(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.verdict is Verdict.INCONCLUSIVE)

    def raise_if_failed(self, *, allow_inconclusive: bool = False) -> None:
        """The suite's rule: CheckFailed (carrying every result) when a check failed, or when
        one was inconclusive and `allow_inconclusive` is not set; else nothing."""
        failed, unsure = self.failed, self.inconclusive
        if failed:
            raise CheckFailed(
                f"{self.title}: {len(failed)} of {len(self.results)} checks failed: "
                + "; ".join(f"{r.name} ({r.detail or r.measured})" for r in failed[:5]),
                untouched="nothing was changed by the checks",
                hint="read the failing lines above; fix the release or roll back",
                facts={"report": jsonable(self)},
            )
        if unsure and not allow_inconclusive:
            raise CheckFailed(
                f"{self.title}: {len(unsure)} of {len(self.results)} checks were inconclusive: "
                + "; ".join(f"{r.name} ({r.detail})" for r in unsure[:5]),
                untouched="nothing was changed by the checks",
                hint="run again with more samples (deploy.toml), or pass --allow-inconclusive",
                facts={"report": jsonable(self)},
            )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def users_needed(ctx: StepContext, suite: str) -> list[str]:
    """Every test user the suite's checks log in as (read up front: a missing secret stops the
    run before the first request)."""
    checks = ctx.config.checks
    names: list[str] = []
    provisions = checks.provision.enabled and any(
        u.provisioned for n, u in checks.users.items() if n != checks.admin_user
    )
    if checks.admin_user and provisions:
        names.append(checks.admin_user)
    if checks.flow is not None and suite in checks.flow.suites:
        steps = checks.flow.resolved_steps(checks.admin_user)
        names += [s.user for s in steps if s.user and s.user != FLOW_USER]
    for probe in checks.probes:
        if suite in probe.suites:
            names += engine.probe_users(probe)
    names += [r.user for r in checks.rbac if suite in r.suites]
    names += [lat.user for lat in checks.latency if suite in lat.suites and lat.user]
    return list(dict.fromkeys(names))


def run(
    ctx: StepContext,
    *,
    environment: str,
    suite: str,
    since: datetime | None = None,
    environ: Mapping[str, str] | None = None,
    client: Callable[[str, float], HttpClient] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    previous_image: str | None = None,
) -> SuiteReport:
    """Run the checks of `suite` against `environment` and return every result.

    :param ctx: the step context (configuration, targets, progress).
    :param environment: the environment's name in deploy.toml.
    :param suite: "smoke", "validate" or "verify".
    :param since: where the log scan starts (default: when each app container started).
    :param environ: where test users' credentials are read (default: os.environ).
    :param client: makes the HTTP client from (base_url, timeout_s); for tests.
    :param on_result: called with each result as soon as it is known (the CLI prints it).
    :param previous_image: the previous release's image; validate then runs the smoke checks
        against it too, beside the new release, on the same (migrated) database.
    """
    if suite not in SUITES:
        raise UsageError(f"unknown check suite {suite!r}", hint=f"use one of {', '.join(SUITES)}")
    config = ctx.config
    env = config.environment(environment)
    checks = config.checks
    started = _now()
    if client is None:
        http = HttpClient(env.base_url, timeout_s=checks.timeout_s, login=checks.login)
    else:
        http = client(env.base_url, checks.timeout_s)
    session = engine.Session(
        client=http,
        checks=checks,
        thresholds=config.thresholds,
        environ=os.environ if environ is None else environ,
        environment=environment,
    )
    engine.all_credentials(session, users_needed(ctx, suite))
    results: list[CheckResult] = []

    def add(batch: list[CheckResult]) -> None:
        for result in batch:
            if on_result is not None:
                on_result(result)
        results.extend(batch)

    try:
        ctx.progress(f"{suite} on {environment} ({env.base_url})")
        usage_start = _read_usage(ctx, environment) if suite in USAGE_SUITES else {}
        add(engine.ensure_users(session))
        if checks.database is not None:
            db = checks.database
            platform = ctx.platform(environment)

            def heads() -> tuple[str, ...]:
                return engine.head_revisions(
                    platform, config.project.app_service, db.revision_command
                )

            def stored_revision() -> str | None:
                return Database.of(platform).revision()

            add(
                engine.database(
                    session, db, suite=suite, heads=heads, stored_revision=stored_revision
                )
            )
        add([engine.probe(session, p) for p in checks.probes if suite in p.suites])
        add([engine.rbac(session, r) for r in checks.rbac if suite in r.suites])
        if checks.flow is not None and suite in checks.flow.suites:
            add(engine.user_flow(session, checks.flow))
        for lat in checks.latency:
            if suite in lat.suites:
                ctx.progress(
                    f"latency: {lat.rate_per_s:g} requests/s for {lat.duration_s:g} s "
                    f"on {lat.method} {lat.path}"
                )
                add(engine.latency(session, lat))
        if previous_image and suite == "validate":
            image: str | None = previous_image
            if previous_image == AUTO:
                image, why = previous_release_image(ctx, environment)
                ctx.progress(f"backward compatibility: {why}")
            if image:
                add(backward_compatibility(ctx, environment, image, session))
        if usage_start:
            add(_usage_results(ctx, environment, usage_start))
        # Last, so that errors the checks themselves provoked are in the logs it reads.
        if checks.logs is not None and suite in checks.logs.suites:
            add(
                engine.log_scan(
                    ctx.platform(environment),
                    checks.logs,
                    service=config.project.app_service,
                    since=since,
                )
            )
    finally:
        http.close()
    return SuiteReport(
        environment=environment,
        suite=suite,
        base_url=env.base_url,
        started=started,
        finished=_now(),
        verdict=overall(results),
        results=tuple(results),
    )


#: The suites that read the app containers' CPU and memory (as monitor does), so that every
#: production release has these figures, with or without a watch.
USAGE_SUITES = ("verify",)


def _read_usage(ctx: StepContext, environment: str) -> dict[str, containers.ContainerUsage]:
    """The app containers' CPU over one second before the suite's first request (its own
    requests, logins and load test are not the service's load) and their memory, by the
    names placement.running_named gives them (on Swarm: each task's container on its node);
    {} (and a progress line) when the engine cannot give them: the checks still run."""
    config = ctx.config
    if not config.checks.monitor.container_stats:
        return {}
    try:
        running = running_named(ctx.platform(environment), config.project.app_service)
        return {
            name: dataclasses.replace(containers.usage(c), container=name)
            for name, c in running.items()
        }
    except (DeployError, EngineError) as exc:
        why = exc.one_line() if isinstance(exc, DeployError) else str(exc)
        ctx.progress(f"cpu and memory not sampled: {why}")
        return {}


def _usage_results(
    ctx: StepContext, environment: str, start: Mapping[str, containers.ContainerUsage]
) -> list[CheckResult]:
    """CPU from the start's reading; memory the larger of the start's and the end's (after the
    load test), for each container read at the start."""
    end = _read_usage(ctx, environment)
    usages = [
        dataclasses.replace(
            use,
            memory_bytes=max(use.memory_bytes, end[n].memory_bytes if n in end else 0),
        )
        for n, use in start.items()
    ]
    thresholds = ctx.config.thresholds
    return containers.judge_usage(
        usages, cpu_limit=thresholds.cpu_percent, memory_limit_mb=thresholds.memory_mb
    )


def run_and_record(
    ctx: StepContext,
    *,
    environment: str,
    suite: str,
    since: datetime | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    previous_image: str | None = None,
    environ: Mapping[str, str] | None = None,
    save: suite_record.Save | None = None,
) -> SuiteReport:
    """Runbook steps 2, 3 and 6: run `suite` against `environment`, then keep its results in
    the environment's current release record. The verdict is the report's: call its
    `raise_if_failed` to apply the suite's rule.

    :param ctx: the step context (configuration, targets, progress).
    :param environment: the environment's name in deploy.toml.
    :param suite: "smoke", "validate" or "verify".
    :param since: where the log scan starts (default: when each app container started).
    :param on_result: called with each result as soon as it is known (the CLI prints it).
    :param previous_image: validate only: the previous release's image, or "auto" (see `run`).
    :param environ: where test users' credentials are read (default: os.environ).
    :param save: keeps the summary in the release record (default: suite_record.save).
    :returns: the report, with `recorded` saying where it was kept (or why it was not).
    :raises CheckFailed: no check of the suite is configured (nothing was run).
    """
    report = run(
        ctx,
        environment=environment,
        suite=suite,
        since=since,
        environ=environ,
        on_result=on_result,
        previous_image=previous_image,
    )
    if not report.results:
        raise CheckFailed(
            f"{report.title}: no checks are configured for this suite",
            untouched="nothing was checked",
            hint=f'add checks with suites = [..., "{suite}"] under [checks] in deploy.toml',
        )
    stored = suite_record.summary(
        suite=suite,
        environment=environment,
        started=report.started,
        finished=report.finished,
        verdict=report.verdict,
        results=report.results,
    )
    keep = suite_record.save if save is None else save
    return dataclasses.replace(report, recorded=keep(ctx, environment, stored))


#: `--previous-image auto`: the image the environment's current release replaced, from its history.
AUTO = "auto"


def previous_release_image(ctx: StepContext, environment: str) -> tuple[str | None, str]:
    """The image the environment's current release replaced, and why it is (or is not) checked:
    there is none before the first release, and a release that declared its migrations not
    expand-only promises no compatibility to check."""
    with open_environment(ctx, environment) as env_session:
        current = env_session.history.current_release()
    if current is None or not current.previous_image:
        return None, f"not applicable: no earlier release is recorded for {environment}"
    if current.expand_only is False:
        return None, (
            f"not applicable: release {current.version or current.id} declared its migrations "
            "not expand-only, so the previous release is not expected to run on its schema"
        )
    return current.previous_image, f"the previous release's image is {current.previous_image}"


def _compat_not_run(prefix: str, why: str) -> list[CheckResult]:
    return [
        CheckResult(
            prefix + "previous release on the new schema",
            Verdict.INCONCLUSIVE,
            "not run",
            "smoke checks pass",
            why,
        )
    ]


def backward_compatibility(
    ctx: StepContext, environment: str, image: str, session: engine.Session
) -> list[CheckResult]:
    """The smoke probes and RBAC checks against the previous release's image, started beside
    the new one on the same database. Its own migration revision is not checked: it is older."""
    config = ctx.config
    target = ctx.platform(environment)
    prefix = f"compat {image}: "
    if isinstance(target, SwarmPlatform):
        return _compat_not_run(
            prefix,
            "not run on Swarm: the compatibility run starts the previous image as one container "
            "beside the app on one engine, and a Swarm environment's app runs as tasks on the "
            "cluster's nodes; check the previous release on a Compose staging environment",
        )
    if not target.environment.is_local:
        return _compat_not_run(
            prefix, "the compatibility run needs the local engine (it publishes on 127.0.0.1)"
        )
    checks = config.checks
    try:
        settings = proxy_settings.resolve(config, target.environment)
        with compat.previous_app(
            target,
            config.project.app_service,
            image,
            health=settings.health,
            port=settings.app_port,
        ) as previous:
            client = HttpClient(previous.url, timeout_s=checks.timeout_s, login=checks.login)
            old = engine.Session(
                client, checks, config.thresholds, session.environ, environment=environment
            )
            try:
                found: list[CheckResult] = []
                if checks.database is not None:
                    found += engine.database(old, checks.database, suite="smoke", heads=None)
                found += [engine.probe(old, p) for p in checks.probes if "smoke" in p.suites]
                found += [engine.rbac(old, r) for r in checks.rbac if "smoke" in r.suites]
            finally:
                client.close()
    except DeployError as exc:
        return [
            CheckResult(
                prefix + "previous release starts",
                Verdict.FAIL,
                "did not start",
                "answers its health route",
                exc.one_line(),
            )
        ]
    return [dataclasses.replace(r, name=prefix + r.name) for r in found]
