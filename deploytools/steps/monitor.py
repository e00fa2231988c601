"""`deploytools monitor`: runbook step 7, the watch after a release, with persistence rules.

Every interval it takes one sample: the service's /metrics (error rate, login success,
permission-check and database latency, each over the interval since the previous scrape), the
app containers' CPU and memory (as `docker stats` computes them, over the same interval) and the
probes whose suites hold "monitor". One bad sample is a blip; a rule breaches only when it fails
`consecutive_failures` samples in a row or `failure_limit` samples in all (Argo Rollouts'
analysis works the same way). On the first breach the watch stops and, if asked, rolls back.

On a Swarm environment the app's containers are its tasks' (each read on its node, named with
it), and a metrics window is the interval since the previous scrape of the same replica.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from deploytools.checks import baseline as baseline_mod
from deploytools.checks import containers, prometheus, stats
from deploytools.checks import suite as engine
from deploytools.checks.http import HttpClient
from deploytools.checks.results import CheckResult, Verdict
from deploytools.config import MetricRule
from deploytools.context import StepContext
from deploytools.errors import CheckFailed, UsageError
from deploytools.jsonable import jsonable
from deploytools.platforms import placement
from deploytools.platforms.swarm import SwarmPlatform
from deploytools.session import open_environment
from deploytools.steps import rollback as rollback_step
from deploytools.steps import suite_record, watch_keep
from deploytools.store.records import ReleaseRecord, parse_time

P, F, INC = Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE

#: What a rollback hook gets: the context, the environment and the reason ("monitor breach: "
#: and what breached, recorded on the rollback record); what it returns is recorded.
Rollback = Callable[[StepContext, str, str], Any]

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    """ "90", "90s", "15m", "1h", "500ms" -> seconds."""
    match = _DURATION_RE.match(text)
    if not match:
        raise UsageError(
            f"cannot read the duration {text!r}",
            untouched="nothing was monitored",
            hint="write it as 90, 90s, 15m or 1h",
        )
    factor = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
    return float(match.group(1)) * factor


@dataclass
class RuleTrack:
    """One rule's history over the watch."""

    name: str
    threshold: str = ""
    samples: int = 0
    passes: int = 0
    failures: int = 0
    consecutive: int = 0
    longest_run: int = 0
    last: CheckResult | None = None
    breached_at: int | None = None

    def add(self, result: CheckResult, index: int, *, in_a_row: int, limit: int) -> bool:
        """Record one sample's result; True when this sample makes the failure persistent."""
        self.samples += 1
        self.last = result
        self.threshold = result.threshold
        if result.verdict is F:
            self.failures += 1
            self.consecutive += 1
            self.longest_run = max(self.longest_run, self.consecutive)
        elif result.verdict is P:
            self.passes += 1
            self.consecutive = 0
        # Inconclusive (no traffic in the window): neither a failure nor a recovery.
        if self.breached_at is None and (self.consecutive >= in_a_row or self.failures >= limit):
            self.breached_at = index
            return True
        return False


@dataclass(frozen=True)
class MonitorSample:
    index: int
    at: str
    results: tuple[CheckResult, ...]


@dataclass(frozen=True)
class MonitorReport:
    environment: str
    started: str
    finished: str
    duration_s: float
    interval_s: float
    consecutive_failures: int
    failure_limit: int
    samples: int
    verdict: Verdict
    breaches: tuple[str, ...]
    results: tuple[CheckResult, ...]  # one per rule, over the watch
    regressions: tuple[str, ...] = ()
    rolled_back: bool = False
    rollback_result: Any = None
    #: Where run_and_record saved this watch (a release record), or why it did not.
    recorded: str = ""
    #: What the watch's end did with the container kept for a rollback by switch (retire).
    retired: tuple[str, ...] = ()
    sample_log: tuple[MonitorSample, ...] = field(default=(), repr=False)

    @property
    def title(self) -> str:
        return f"monitor on {self.environment}"

    def raise_if_failed(self) -> None:
        """The watch's rule: CheckFailed on a breach (after the rollback, when one ran; its
        facts say `rolled_back`), or on a regression against the release's baseline."""
        if self.breaches:
            done = "rolled back" if self.rolled_back else "not rolled back"
            raise CheckFailed(
                f"{self.title}: breach ({done}): " + "; ".join(self.breaches),
                untouched="the environment was rolled back"
                if self.rolled_back
                else "the environment was left as it is",
                hint="read the samples above; "
                + ("check the rolled-back release" if self.rolled_back else "roll back if needed"),
                facts={"report": jsonable(self), "rolled_back": self.rolled_back},
            )
        if self.regressions:
            raise CheckFailed(
                f"{self.title}: regression against the release's baseline: "
                + "; ".join(self.regressions),
                untouched="the environment was left as it is",
                hint="compare with the baseline's numbers above; roll back if the regression "
                "matters",
                facts={"report": jsonable(self)},
            )


def _utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def evaluate_rule(
    rule: MetricRule,
    before: list[prometheus.Sample] | None,
    after: list[prometheus.Sample],
    threshold: float,
) -> CheckResult:
    """One metric rule over the window between two scrapes."""
    if rule.kind == "ratio":
        k, n = prometheus.counter_ratio(before, after, rule.metric, rule.match, rule.among)
        r = stats.rate(k, n)
        sign = "<" if rule.below else ">="
        if n == 0:
            return CheckResult(
                rule.name,
                INC,
                "no events in the window",
                f"{sign} {threshold:g}%",
                "nothing to judge",
            )
        verdict, why = stats.rate_verdict(r, threshold / 100, below=rule.below)
        return CheckResult(
            rule.name,
            verdict,
            r.fraction(),
            f"{sign} {threshold:g}%",
            why,
            {"k": k, "n": n, "low": r.low, "high": r.high},
        )
    hq = prometheus.histogram_quantile(before, after, rule.metric, rule.quantile, rule.match)
    unit = " ms" if rule.threshold.endswith("_ms") else ""
    want = f"p{100 * rule.quantile:g} {'<' if rule.below else '>='} {threshold:g}{unit}"
    if hq.value is None or hq.count < rule.min_count:
        return CheckResult(
            rule.name,
            INC,
            f"{hq.count} observations",
            want,
            f"{rule.min_count} observations needed in the window",
        )
    value = hq.value * rule.scale
    ok = value < threshold if rule.below else value >= threshold
    return CheckResult(
        rule.name,
        P if ok else F,
        f"~{value:.3g}{unit} (from histogram buckets, n={hq.count})",
        want,
        "" if ok else f"{value:.3g}{unit} against {threshold:g}{unit}",
        {
            "value": value,
            "count": hq.count,
            # Bounds in the rule's unit; +Inf as a string so that the JSON stays standard.
            "buckets": [["+Inf" if math.isinf(le) else le * rule.scale, n] for le, n in hq.buckets],
        },
    )


def retire(ctx: StepContext, environment: str) -> tuple[str, ...]:
    """The watch is over: a rolling deploy's previous container kept up past its window
    (`[deploy] watch_window_s`) is stopped and removed (steps/watch_keep.py)."""
    return tuple(watch_keep.retire_expired(ctx, environment))


def roll_back(ctx: StepContext, environment: str, reason: str) -> ReleaseRecord:
    """The rollback step, as a breach calls it: back to the release before, no prompt."""
    return rollback_step.run(ctx, environment=environment, confirm=None, reason=reason)


class _Watch:
    """What one watch keeps between its samples: the HTTP client and the checks' session, the
    previous scrape and container stats (each sample judges the interval since them), and each
    rule's track."""

    def __init__(
        self, ctx: StepContext, environment: str, environ: Mapping[str, str] | None
    ) -> None:
        config = ctx.config
        self.config = config
        self.settings = config.checks.monitor
        env = config.environment(environment)
        self.platform = ctx.platform(environment)
        # On Swarm each scrape through deploytools' proxy reaches one of the replicas, and
        # another replica's counters are no continuation: a window is two scrapes of the same
        # one (prometheus.replica_of). On one engine one container answers them all.
        self.per_replica = isinstance(self.platform, SwarmPlatform)
        self.client = HttpClient(
            env.base_url, timeout_s=config.checks.timeout_s, login=config.checks.login
        )
        self.session = engine.Session(
            self.client,
            config.checks,
            config.thresholds,
            os.environ if environ is None else environ,
            environment=environment,
        )
        self.probes = [p for p in config.checks.probes if "monitor" in p.suites]
        try:
            engine.all_credentials(
                self.session,
                list(dict.fromkeys(u for p in self.probes for u in engine.probe_users(p))),
            )
        except BaseException:
            self.client.close()
            raise
        self.tracks: dict[str, RuleTrack] = {}
        self.log: list[MonitorSample] = []
        self.breaches: list[str] = []
        self.first_metrics: list[prometheus.Sample] | None = None
        self.previous_metrics: list[prometheus.Sample] | None = None
        #: Per replica (per_replica only): its first and its latest scrape.
        self.replicas: dict[str, tuple[list[prometheus.Sample], list[prometheus.Sample]]] = {}
        self.previous_stats: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        self.client.close()

    def start(self) -> None:
        """The readings the first sample is judged against."""
        self.first_metrics, _ = self.scrape()
        self.previous_metrics = self.first_metrics
        if self.per_replica and self.first_metrics is not None:
            self.rule_results(self.first_metrics)  # opens the window of the replica it reached
        self.previous_stats = self.read_stats()

    def scrape(self) -> tuple[list[prometheus.Sample] | None, CheckResult | None]:
        """The service's metrics, and whether they could be read; (None, None) when no metric
        rule needs them: a service without /metrics is then watched without them."""
        if not self.config.checks.metrics:
            return None, None
        path = self.settings.metrics_path
        answer, text = self.client.text(path)
        name = f"metrics readable ({path})"
        if answer.status != 200:
            return None, CheckResult(
                name, F, answer.describe(), "status 200", "the service's metrics cannot be read"
            )
        try:
            return prometheus.parse(text), CheckResult(name, P, answer.describe(), "status 200")
        except ValueError as exc:
            return None, CheckResult(name, F, "not Prometheus text", "status 200", str(exc))

    def read_stats(self) -> dict[str, dict[str, Any]]:
        """One stats reading of each running app container, by its shown name (on Swarm:
        each task's container on its node, so that "cpu NAME" says which node to look at)."""
        if not self.settings.container_stats:
            return {}
        running = placement.running_named(self.platform, self.config.project.app_service)
        return {name: containers.raw_stats(c) for name, c in running.items()}

    def usage_results(
        self, before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
    ) -> list[CheckResult]:
        return containers.usage_results(
            before,
            after,
            cpu_limit=self.config.thresholds.cpu_percent,
            memory_limit_mb=self.config.thresholds.memory_mb,
        )

    def sample(self, index: int) -> MonitorSample:
        """Take sample `index`: metrics, container usage, probes; track each result, and note
        a breach when this sample makes a failure persistent."""
        results: list[CheckResult] = []
        current_metrics, readable = self.scrape()
        if readable is not None:
            results.append(readable)
        if current_metrics is not None:
            results += self.rule_results(current_metrics)
            self.previous_metrics = current_metrics
        current_stats = self.read_stats()
        results += self.usage_results(self.previous_stats, current_stats)
        self.previous_stats = current_stats
        self.session.client.forget_tokens()  # a restarted service may have a new signing key
        results += [engine.probe(self.session, p) for p in self.probes]
        sample = MonitorSample(index, _utc(), tuple(results))
        self.log.append(sample)
        for result in results:
            track = self.tracks.setdefault(result.name, RuleTrack(result.name))
            if track.add(
                result,
                index,
                in_a_row=self.settings.consecutive_failures,
                limit=self.settings.failure_limit,
            ):
                why = result.detail or result.measured
                self.breaches.append(
                    f"{result.name}: failed {track.consecutive} samples in a row, "
                    f"{track.failures} of {track.samples} in all ({why})"
                )
        return sample

    def rule_results(self, current: list[prometheus.Sample]) -> list[CheckResult]:
        """Each metric rule over the window since the previous scrape, of the same replica
        when per_replica: a replica's first scrape only opens its window (inconclusive)."""
        rules = self.config.checks.metrics
        before = self.previous_metrics
        replica = prometheus.replica_of(current) if self.per_replica else ""
        if replica and replica not in self.replicas:
            self.replicas[replica] = (current, current)
            return [
                dataclasses.replace(
                    evaluate_rule(rule, current, current, self.session.threshold(rule.threshold)),
                    verdict=INC,
                    measured="the first scrape of this replica",
                    detail=f"its window opens here (the process started at {replica})",
                    data={},
                )
                for rule in rules
            ]
        if replica:
            first, before = self.replicas[replica]
            self.replicas[replica] = (first, current)
        return [
            evaluate_rule(rule, before, current, self.session.threshold(rule.threshold))
            for rule in rules
        ]

    def whole_watch(self) -> dict[str, CheckResult]:
        """Each metric rule over the whole watch as one window: enough requests, maybe, for
        what one interval cannot show (per_replica: every replica's window, added up)."""
        first, last = self.first_metrics, self.previous_metrics
        if self.replicas:
            first = [s for r, (f, _) in self.replicas.items() for s in prometheus.tagged(f, r)]
            last = [s for r, (_, n) in self.replicas.items() for s in prometheus.tagged(n, r)]
        if first is None or last is None:
            return {}
        return {
            rule.name: evaluate_rule(rule, first, last, self.session.threshold(rule.threshold))
            for rule in self.config.checks.metrics
        }


def run(
    ctx: StepContext,
    *,
    environment: str,
    duration_s: float,
    interval_s: float | None = None,
    rollback_on_breach: bool = False,
    rollback: Rollback | None = roll_back,
    environ: Mapping[str, str] | None = None,
    on_sample: Callable[[MonitorSample], None] | None = None,
    baseline: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    serving: Callable[[], str | None] | None = None,
) -> MonitorReport:
    """Watch `environment` for `duration_s` seconds, one sample every `interval_s`.

    :param ctx: the step context.
    :param environment: the environment's name in deploy.toml.
    :param duration_s: how long to watch; the watch ends early on the first breach.
    :param interval_s: seconds between samples (default: [checks.monitor] interval_s).
    :param rollback_on_breach: call `rollback(ctx, environment, reason)` on a breach.
    :param rollback: the rollback to call (default: the rollback step); None with
        rollback_on_breach is refused.
    :param environ: where test users' credentials are read (default os.environ).
    :param on_sample: called after each sample (the CLI prints a line).
    :param baseline: record this watch as the current release's baseline if it has none yet,
        else compare this watch with it (a regression fails the watch; it does not roll back).
    :param clock: monotonic seconds (tests pass a fake).
    :param sleep: waits (tests pass a fake).
    :param serving: the id of the release serving now (default: the environment's history);
        with rollback_on_breach, a breach rolls back only while the release the watch began
        with still serves (a person's rollback meanwhile must not be followed by a second).
    """
    settings = ctx.config.checks.monitor
    interval = interval_s if interval_s is not None else settings.interval_s
    if duration_s <= 0 or interval <= 0:
        raise UsageError(
            "monitor needs a positive --duration and --interval", untouched="nothing was monitored"
        )
    if rollback_on_breach and rollback is None:
        raise UsageError(
            "--rollback-on-breach needs the rollback step, and none was given",
            untouched="nothing was monitored",
            hint="run monitor without --rollback-on-breach, and roll back by hand on a breach",
        )
    if rollback_on_breach and serving is None:
        serving = functools.partial(_serving_release, ctx, environment)
    watched = serving() if rollback_on_breach and serving is not None else None
    watch = _Watch(ctx, environment, environ)
    started = _utc()
    try:
        watch.start()
        t0 = clock()
        index = 1
        while t0 + index * interval <= t0 + duration_s + 1e-9:
            wait = t0 + index * interval - clock()
            if wait > 0:
                sleep(wait)
            sample = watch.sample(index)
            if on_sample is not None:
                on_sample(sample)
            if watch.breaches:
                break
            index += 1
    finally:
        watch.close()

    breaches = watch.breaches
    summary = _summaries(watch.tracks, settings.consecutive_failures, settings.failure_limit)
    whole_watch = watch.whole_watch()
    summary += [_over_watch(r) for r in whole_watch.values()]
    regressions: list[str] = []
    if baseline and not breaches:
        compared = baseline_results(ctx, environment, whole_watch, duration_s)
        summary += compared
        regressions = [f"{r.name}: {r.measured}" for r in compared if r.verdict is F]
    rolled_back, rollback_result = False, None
    if breaches and rollback_on_breach and rollback is not None:
        now_serving = serving() if serving is not None else None
        if now_serving != watched:
            # Someone rolled back (or deployed) meanwhile: this breach is not the watched
            # release's to undo, and a rollback now would go one release too far.
            rollback_result = (
                f"not rolled back: release {watched} no longer serves ({now_serving} does)"
            )
            ctx.progress(f"breach on {environment}: {rollback_result}")
        else:
            ctx.progress(f"breach on {environment}: rolling back")
            rollback_result = rollback(ctx, environment, "monitor breach: " + "; ".join(breaches))
            rolled_back = True
    return MonitorReport(
        environment=environment,
        started=started,
        finished=_utc(),
        duration_s=duration_s,
        interval_s=interval,
        consecutive_failures=settings.consecutive_failures,
        failure_limit=settings.failure_limit,
        samples=len(watch.log),
        verdict=F if breaches or regressions else (P if watch.log else INC),
        breaches=tuple(breaches),
        regressions=tuple(regressions),
        results=tuple(summary),
        rolled_back=rolled_back,
        rollback_result=rollback_result,
        sample_log=tuple(watch.log),
    )


def run_and_record(
    ctx: StepContext,
    *,
    environment: str,
    duration_s: float,
    interval_s: float | None = None,
    rollback_on_breach: bool = False,
    on_sample: Callable[[MonitorSample], None] | None = None,
    baseline: bool = False,
    save: suite_record.Save | None = None,
) -> MonitorReport:
    """Runbook step 7, as `deploytools monitor` and `pipeline run` both run it: the watch
    (`run`, with the rollback step on a breach when asked), then its summary kept in the
    release record of the release it watched (after a rollback: the one rolled back, not the
    one serving now). The verdict is the report's: `raise_if_failed` applies the rule.

    :param save: keeps the summary in the release record (default: suite_record.save).
    Other parameters: as `run`.
    """
    report = run(
        ctx,
        environment=environment,
        duration_s=duration_s,
        interval_s=interval_s,
        rollback_on_breach=rollback_on_breach,
        on_sample=on_sample,
        baseline=baseline,
    )
    rolled = report.rollback_result
    watched = rolled.previous if isinstance(rolled, ReleaseRecord) else None
    stored = suite_record.summary(
        suite="monitor",
        environment=environment,
        started=report.started,
        finished=report.finished,
        verdict=report.verdict,
        results=report.results,
        samples=report.samples,
        breaches=list(report.breaches),
        regressions=list(report.regressions),
        rolled_back=report.rolled_back,
    )
    keep = suite_record.save if save is None else save
    recorded = keep(ctx, environment, stored, release_id=watched)
    return dataclasses.replace(report, recorded=recorded, retired=retire(ctx, environment))


def _summaries(tracks: dict[str, RuleTrack], in_a_row: int, limit: int) -> list[CheckResult]:
    out = []
    rule_text = f"breach: {in_a_row} failed samples in a row or {limit} in all"
    for track in tracks.values():
        if track.breached_at is not None:
            verdict = F
        elif track.failures == 0 and all_inconclusive(track):
            verdict = INC
        else:
            # Failures that never persisted are blips: reported, not a breach.
            verdict = P
        measured = (
            f"{track.failures} failed of {track.samples} samples, longest run {track.longest_run}"
        )
        detail = ""
        if track.last is not None and track.last.verdict is not P:
            detail = f"last: {track.last.measured}" + (
                f" ({track.last.detail})" if track.last.detail else ""
            )
        out.append(CheckResult(track.name, verdict, measured, rule_text, detail))
    return out


def all_inconclusive(track: RuleTrack) -> bool:
    """Whether a rule never had a sample it could judge (no traffic, too few observations)."""
    return track.samples > 0 and track.last is not None and track.passes == 0


def _over_watch(result: CheckResult) -> CheckResult:
    return CheckResult(
        f"over the watch: {result.name}",
        result.verdict,
        result.measured,
        result.threshold,
        result.detail,
        result.data,
    )


def baseline_results(
    ctx: StepContext,
    environment: str,
    whole_watch: Mapping[str, CheckResult],
    duration_s: float,
) -> list[CheckResult]:
    """Record the watch as the serving release's baseline, or compare with the one recorded.

    Baselines live in the backup store beside the history (`<env>/baselines/<release>.json`),
    so every runner, and every scheduled watch of the next 24 hours, finds the same one.
    """
    rules = {rule.name: rule for rule in ctx.config.checks.metrics}
    measured = {
        name: m
        for name, result in whole_watch.items()
        if (m := baseline_mod.measurement(rules[name], result)) is not None
    }
    with open_environment(ctx, environment) as env_session:
        current = env_session.history.current_release()
        if current is None:
            return [
                CheckResult(
                    "baseline",
                    INC,
                    "no release recorded",
                    "a release to compare with",
                    f"no deploy of {environment} is recorded; nothing to attach it to",
                )
            ]
        path = f"{environment}/baselines/{current.id}.json"
        stored = env_session.store.read(path)
        if stored is None:
            record = baseline_mod.Baseline(
                release=current.id,
                version=current.version,
                image=current.image,
                recorded=_utc(),
                duration_s=duration_s,
                metrics=measured,
            )
            env_session.store.ensure_dir(f"{environment}/baselines")
            env_session.store.write(path, json.dumps(dataclasses.asdict(record)).encode())
            return [
                CheckResult(
                    "baseline",
                    P,
                    f"recorded for release {current.id} ({current.version})",
                    "a baseline",
                    f"{len(measured)} of {len(rules)} metrics had numbers to keep",
                )
            ]
    then = json.loads(stored)
    tolerance = ctx.config.checks.monitor.baseline_tolerance
    return [
        baseline_mod.compare(
            rule,
            measured.get(name),
            (then.get("metrics") or {}).get(name),
            tolerance=tolerance,
            release=current.id,
        )
        for name, rule in rules.items()
    ]


def run_if_recent(
    ctx: StepContext,
    *,
    environment: str,
    duration_s: float,
    only_after_s: float | None,
    interval_s: float | None = None,
    rollback_on_breach: bool = False,
    on_sample: Callable[[MonitorSample], None] | None = None,
    baseline: bool = False,
    on_window: Callable[[WatchWindow], None] | None = None,
) -> MonitorReport | WatchWindow:
    """`deploytools monitor`: `run_and_record`, or, with `only_after_s` (the scheduled watches'
    --only-after-release), only while the serving release finished less than that many seconds
    ago; outside that window nothing is watched and the window is returned instead.

    :param on_window: told the window (open or not) before the watch starts.
    Other parameters: as `run_and_record`.
    """
    if only_after_s is not None:
        window = watch_window(ctx, environment, only_after_s)
        if on_window is not None:
            on_window(window)
        if not window.open:
            retire(ctx, environment)
            return window
    return run_and_record(
        ctx,
        environment=environment,
        duration_s=duration_s,
        interval_s=interval_s,
        rollback_on_breach=rollback_on_breach,
        on_sample=on_sample,
        baseline=baseline,
    )


# -- The watch's window after a release ----------------------------------------------------------


@dataclass(frozen=True)
class WatchWindow:
    """Whether a scheduled watch still has a release to watch (`--only-after-release`)."""

    open: bool
    reason: str
    release: str | None = None
    finished: str | None = None
    age_s: float | None = None


def window_of(record: ReleaseRecord | None, within_s: float, *, now: float) -> WatchWindow:
    """Open while the serving release `record` (or None: none recorded) finished less than
    `within_s` seconds before `now` (a Unix time); pure, for the CLI and its tests."""
    if record is None:
        return WatchWindow(False, "no serving release is recorded")
    if not record.finished:
        return WatchWindow(True, f"release {record.id} is still going", record.id)
    age = max(0.0, now - parse_time(str(record.finished)))
    where = f"release {record.id} finished {_hours(age)} ago"
    if age < within_s:
        return WatchWindow(
            True, f"{where}, inside the {_hours(within_s)} watch", record.id, record.finished, age
        )
    return WatchWindow(
        False,
        f"{where}, past the {_hours(within_s)} watch: nothing to watch",
        record.id,
        record.finished,
        age,
    )


def watch_window(
    ctx: StepContext, environment: str, within_s: float, *, now: float | None = None
) -> WatchWindow:
    """The window of `environment`'s serving release, read from its release records."""
    if within_s <= 0:
        raise UsageError(
            "--only-after-release needs a positive duration", untouched="nothing was monitored"
        )
    with open_environment(ctx, environment) as env_session:
        current = env_session.history.current_release()
    return window_of(current, within_s, now=time.time() if now is None else now)


def _serving_release(ctx: StepContext, environment: str) -> str | None:
    """The id of `environment`'s serving release record (None: none recorded)."""
    with open_environment(ctx, environment) as env_session:
        current = env_session.history.current_release()
    return None if current is None else current.id


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
