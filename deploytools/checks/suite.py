"""The checks of deploy.toml's [checks], each turned into CheckResults against one service.

Every function here takes a `Session` (the service's HTTP client, the test users, the
thresholds) and returns results; none raises for a check that merely found something wrong.
They raise only when the checks cannot run at all (missing credentials: UsageError).
"""

from __future__ import annotations

import re
import secrets
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from deploytools.checks import logs as logs_mod
from deploytools.checks import stats
from deploytools.checks.http import (
    Answer,
    Credentials,
    HttpClient,
    body_mismatch,
    has_field,
    json_get,
    json_mismatches,
    read_credentials,
)
from deploytools.checks.load import open_load
from deploytools.checks.results import CheckResult, Verdict
from deploytools.config import (
    FLOW_USER,
    BodyValue,
    ChecksConfig,
    DatabaseCheck,
    LatencyCheck,
    LogScan,
    ProbeCheck,
    RbacCheck,
    Thresholds,
    UserFlow,
)
from deploytools.errors import DeployError
from deploytools.platforms.placement import running_named

# For annotations only: the suite is handed containers and a platform, it never opens them.
if TYPE_CHECKING:
    from deploytools.engine.client import Container
    from deploytools.platforms import Platform

#: A probe with a latency budget is sent this many times and judged on the median: one request
#: delayed by a busy host is not the endpoint's speed (the load test measures the tail).
BUDGET_SAMPLES = 7

P = Verdict.PASS
F = Verdict.FAIL
INC = Verdict.INCONCLUSIVE


@dataclass
class Session:
    """What the checks of one run share: the service, its test users and the thresholds."""

    client: HttpClient
    checks: ChecksConfig
    thresholds: Thresholds
    environ: Mapping[str, str]
    #: The environment checked: a test user's secrets may have other names there.
    environment: str = ""
    _credentials: dict[str, Credentials] = field(default_factory=dict)

    def credentials(self, user: str) -> Credentials:
        if user not in self._credentials:
            self._credentials[user] = read_credentials(
                user,
                self.checks.users[user],
                self.environ,
                environment=self.environment,
                style=self.checks.login.style,
            )
        return self._credentials[user]

    def token(self, user: str) -> str | None:
        return self.client.token_for(user, self.credentials(user)) if user else None

    def threshold(self, name: str) -> float:
        return float(getattr(self.thresholds, name))

    def substitute(self, body: Mapping[str, BodyValue]) -> dict[str, Any]:
        """`${user.username}` / `${user.password}` in body strings -> the test user's values."""

        def one(value: Any) -> Any:
            if isinstance(value, tuple):
                return [one(v) for v in value]
            if not isinstance(value, str):
                return value
            match = _CREDENTIAL_RE.fullmatch(value)
            if not match:
                return value
            creds = self.credentials(match.group(1))
            return creds.username if match.group(2) == "username" else creds.password

        return {k: one(v) for k, v in body.items()}

    def error_values(self, answer: Answer) -> str:
        """The documented error fields an answer carries ("error.code=forbidden"), for a
        failure message; "" when there are none."""
        shown = []
        for dotted in self.checks.error_fields:
            value = json_get(answer.json, dotted)
            if isinstance(value, str | int | float | bool):
                shown.append(f"{dotted}={str(value)[:120]}")
        return ", ".join(shown)

    def error_shape_problems(self, answer: Answer) -> list[str]:
        """An error answer (4xx/5xx) must carry the documented fields ([checks] error_fields)."""
        if answer.status < 400 or not self.checks.error_fields:
            return []
        missing = [f for f in self.checks.error_fields if not has_field(answer.json, f)]
        return [f"error answer lacks {', '.join(missing)}"] if missing else []


_CREDENTIAL_RE = re.compile(r"\$\{([A-Za-z0-9_-]+)\.(username|password)\}")


def probe_users(check: ProbeCheck) -> list[str]:
    """The test users a probe needs: its `user`, and those its body names (`${viewer.password}`)."""
    names = [check.user] if check.user else []
    for value in check.body.values():
        for item in value if isinstance(value, tuple) else (value,):
            match = _CREDENTIAL_RE.fullmatch(str(item))
            if match:
                names.append(match.group(1))
    return names


def all_credentials(session: Session, names: list[str]) -> None:
    """Read every credential the run needs first, so a missing one stops it before it starts."""
    for name in names:
        session.credentials(name)


# -- set-up ------------------------------------------------------------------------------------


def ensure_users(session: Session) -> list[CheckResult]:
    """Create test users that cannot log in yet and are to be created (a role, or create =
    true), through [checks.provision]'s request as admin_user.

    Only missing users are created; an existing user's roles are never changed, so a role
    revoked behind the checks' back still shows up as a failed RBAC check. Pre-provisioned
    users (no role, no create; or provision.enabled = false) are only logged in as.
    """
    checks = session.checks
    provision = checks.provision
    if not checks.admin_user or not provision.enabled:
        return []
    results: list[CheckResult] = []
    for name, user in checks.users.items():
        if name == checks.admin_user or not user.provisioned:
            continue
        creds = session.credentials(name)
        if session.token(name) is not None:
            continue
        admin_token = session.token(checks.admin_user)
        if admin_token is None:
            results.append(
                CheckResult(
                    f"setup: admin login ({checks.admin_user})",
                    F,
                    "login refused",
                    f"status {checks.login.expect_status}",
                    "cannot create missing test users: the admin's credentials are not accepted",
                )
            )
            return results
        values = {"username": creds.username, "password": creds.password, "role": user.role}
        answer = session.client.request(
            provision.method,
            provision.path or checks.users_path,
            token=admin_token,
            body=fill_template(provision.body, values),
            body_format=provision.body_format,
        )
        ok = answer.status == provision.expect_status
        shown = f" ({user.role})" if user.role else ""
        said = session.error_values(answer)
        results.append(
            CheckResult(
                f"setup: create test user {name}{shown}",
                P if ok else F,
                answer.describe(),
                f"status {provision.expect_status}",
                ""
                if ok
                else "the user exists with another password, or the admin may not create it"
                + (f" ({said})" if said else ""),
            )
        )
    return results


_PLACEHOLDER_RE = re.compile(r"\$\{([A-Za-z0-9_.-]+)\}")


def fill_text(text: str, values: Mapping[str, Any]) -> str:
    """ "${name}" in `text` -> values[name]; an unknown name stays as written."""
    return _PLACEHOLDER_RE.sub(
        lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), text
    )


def fill_template(body: Mapping[str, BodyValue], values: Mapping[str, Any]) -> dict[str, Any]:
    """A body template with its placeholders filled. A string that is one placeholder takes the
    value as it is (a number stays a number); a list item that becomes "" is left out (a user
    created without a role gets roles = [])."""

    def one(value: Any) -> Any:
        if isinstance(value, str):
            whole = _PLACEHOLDER_RE.fullmatch(value)
            if whole and whole.group(1) in values:
                return values[whole.group(1)]
            return fill_text(value, values)
        return value

    filled: dict[str, Any] = {}
    for key, value in body.items():
        if isinstance(value, tuple):
            filled[key] = [v for v in (one(item) for item in value) if v != ""]
        else:
            filled[key] = one(value)
    return filled


# -- probes and RBAC ---------------------------------------------------------------------------


def probe(session: Session, check: ProbeCheck) -> CheckResult:
    token = session.token(check.user) if check.user else None
    if check.user and token is None:
        return CheckResult(
            check.name,
            F,
            "login refused",
            f"status {check.expect_status}",
            f"test user {check.user} cannot log in",
        )
    budget = check.budget_ms or (session.threshold(check.budget) if check.budget else 0.0)
    body = session.substitute(check.body) if check.body else None
    repeats = BUDGET_SAMPLES if budget else 1
    answers = [
        session.client.request(
            check.method, check.path, token=token, body=body, body_format=check.body_format
        )
        for _ in range(repeats)
    ]
    answer = answers[-1]
    problems: list[str] = []
    wrong = [a for a in answers if a.status != check.expect_status]
    if wrong:
        problems.append(f"{wrong[0].describe()}, want {check.expect_status}")
    else:
        if check.expect_body is not None:
            problems += list(filter(None, [body_mismatch(answer, check.expect_body)]))
        problems += json_mismatches(answer.json, check.expect_json)
        problems += [f"{f} missing" for f in check.expect_fields if not has_field(answer.json, f)]
        problems += session.error_shape_problems(answer)
    want = f"status {check.expect_status}"
    measured = answer.describe()
    if budget:
        slowest = max(a.elapsed_ms for a in answers)
        median = statistics.median(a.elapsed_ms for a in answers)
        want += f", median of {repeats} < {budget:g} ms"
        measured += f", median {median:.1f} ms, slowest {slowest:.1f} ms (n={repeats})"
        if not wrong and median >= budget:
            problems.append(f"median answer took {median:.1f} ms, budget {budget:g} ms")
    verdict = F if problems else P
    return CheckResult(
        check.name,
        verdict,
        measured,
        want,
        "; ".join(problems),
        {"status": answer.status, "elapsed_ms": [round(a.elapsed_ms, 2) for a in answers]},
    )


def rbac(session: Session, check: RbacCheck) -> CheckResult:
    role = session.checks.users[check.user].role or check.user
    name = f"rbac: {check.user} ({role}) {check.method} {check.path} -> {check.expect_status}"
    token = session.token(check.user)
    if token is None:
        return CheckResult(
            name,
            F,
            "login refused",
            f"status {check.expect_status}",
            f"test user {check.user} cannot log in, so {check.method} {check.path} was not tried",
        )
    body = session.substitute(check.body) if check.body else None
    answer = session.client.request(
        check.method, check.path, token=token, body=body, body_format=check.body_format
    )
    problems: list[str] = []
    if answer.status != check.expect_status:
        problems.append(
            f"{check.user} got {answer.status or 'no answer'} on {check.method} {check.path}, "
            f"want {check.expect_status}" + (f" ({answer.error})" if answer.error else "")
        )
        said = session.error_values(answer)
        if said:
            problems.append(f"the service says {said}")
    problems += session.error_shape_problems(answer)
    return CheckResult(
        name,
        F if problems else P,
        answer.describe(),
        f"status {check.expect_status}",
        "; ".join(problems),
        {"status": answer.status, "route": f"{check.method} {check.path}"},
    )


# -- database ----------------------------------------------------------------------------------


#: How long the app image's `alembic heads` may take.
HEADS_TIMEOUT_S = 120.0


def head_revisions(platform: Platform, service: str, command: tuple[str, ...]) -> tuple[str, ...]:
    """The head revision(s) of the migrations shipped in the running app image (asked in one
    running container of `service`, on whichever engine or node runs it)."""
    running = platform.containers(service, include_stopped=False)
    if not running:
        raise LookupError(f"no running {service} container to ask for its migration heads")
    result = running[0].exec(command, timeout_s=HEADS_TIMEOUT_S)
    code, text = result.exit_code, result.output().decode("utf-8", "replace")
    if code != 0:
        raise LookupError(f"`{' '.join(command)}` exited {code}: {text.strip()[-200:]}")
    heads = tuple(line.split()[0] for line in text.splitlines() if "(head)" in line)
    if not heads:
        raise LookupError(f"`{' '.join(command)}` printed no head: {text.strip()[-200:]}")
    return heads


def database(
    session: Session,
    check: DatabaseCheck,
    *,
    suite: str,
    heads: Callable[[], tuple[str, ...]] | None,
    stored_revision: Callable[[], str | None] | None = None,
) -> list[CheckResult]:
    """Reachable (and its round trip) in the check's suites; the revision in revision_suites,
    from the health answer's revision_field or from the database itself (`stored_revision`,
    which reads alembic_version through the database service), as revision_from says."""
    answer = session.client.request("GET", check.path)
    results: list[CheckResult] = []
    reachable = json_get(answer.json, check.reachable_field) if check.reachable_field else None
    limit = session.threshold("database_latency_ms")
    if suite in check.suites and check.reachable_field:
        if reachable is True:
            rtt = json_get(answer.json, check.round_trip_field)
            rtt_ok = isinstance(rtt, int | float) and rtt < limit
            results.append(
                CheckResult(
                    "database connected",
                    P if rtt_ok else F,
                    f"reachable, round trip {rtt} ms",
                    f"reachable, < {limit:g} ms",
                    "" if rtt_ok else f"database round trip {rtt} ms, limit {limit:g} ms",
                )
            )
        else:
            why = (
                f"the service cannot reach its database: {answer.describe()}, "
                f"{check.reachable_field} is {reachable if reachable is not None else 'absent'}"
                if answer.status
                else f"cannot ask the service about its database: {answer.describe()}"
            )
            results.append(
                CheckResult("database connected", F, answer.describe(), "reachable", why)
            )
    if suite in check.revision_suites and check.expected_revision:
        current, source = _current_revision(answer, check, stored_revision)
        current_text = current if isinstance(current, str) else f"unknown ({source})"
        try:
            if check.expected_revision == "head":
                if heads is None:
                    raise LookupError("no app container to ask")
                expected = heads()
            else:
                expected = (check.expected_revision,)
        except LookupError as exc:
            results.append(
                CheckResult("database migrated", INC, f"revision {current_text}", "head", str(exc))
            )
            return results
        ok = current in expected
        results.append(
            CheckResult(
                "database migrated",
                P if ok else F,
                f"revision {current_text}",
                f"revision {' or '.join(expected)}",
                ""
                if ok
                else f"the database is at {current_text}, the release expects "
                f"{' or '.join(expected)}: run `deploytools migrate`",
            )
        )
    return results


def _current_revision(
    answer: Answer, check: DatabaseCheck, stored: Callable[[], str | None] | None
) -> tuple[Any, str]:
    """The revision the database is at, and where it was read."""
    reported = json_get(answer.json, check.revision_field) if check.revision_field else None
    from_health = check.revision_from == "health" or (
        check.revision_from == "auto" and isinstance(reported, str)
    )
    if from_health:
        return reported, f"{check.revision_field} of {check.path}"
    if stored is None:
        return None, "no database service to ask"
    try:
        return stored() or "none (never migrated)", "alembic_version"
    except DeployError as exc:
        return None, f"alembic_version unreadable: {exc.one_line()}"


# -- latency -----------------------------------------------------------------------------------


def latency(session: Session, check: LatencyCheck) -> list[CheckResult]:
    """The open-model load test: the percentile with its range, and the errors it saw."""
    token = session.token(check.user) if check.user else None
    threshold = session.threshold(check.threshold)
    want = f"p{check.percentile:g} < {threshold:g} ms"
    if check.user and token is None:
        return [CheckResult(check.name, F, "login refused", want, f"{check.user} cannot log in")]

    def send(due: float) -> Answer:
        return session.client.request(check.method, check.path, token=token, started=due)

    load = open_load(
        send,
        rate_per_s=check.rate_per_s,
        duration_s=check.duration_s,
        concurrency=check.concurrency,
        ok=lambda a: a.status == check.expect_status,
    )
    pct = stats.percentile(load.latencies_ms, check.percentile)
    verdict, why = stats.percentile_verdict(pct, threshold, check.min_samples)
    route = f"{check.method} {check.path}"
    measured = pct.describe() + f" at {check.rate_per_s:g}/s on {route}"
    errors = stats.rate(load.errors, load.n)
    error_limit = session.threshold("error_rate_percent") / 100
    error_verdict, error_why = stats.rate_verdict(errors, error_limit)
    if load.errors:
        error_why = "; ".join(filter(None, [error_why, *load.error_examples]))
    # Zero errors in a few hundred requests cannot show a 0.1 % rate: that is for `monitor`,
    # over the watch. Here errors fail the load test only when they are clearly too many.
    load_errors = CheckResult(
        f"{check.name} errors",
        F if error_verdict is F else P if load.errors == 0 else INC,
        errors.describe(),
        f"no errors (the {100 * error_limit:g}% rate: over the watch, by monitor)",
        error_why if load.errors else "",
        {"errors": load.errors, "n": load.n},
    )
    return [
        CheckResult(
            check.name,
            verdict,
            measured,
            want,
            why,
            {
                "n": pct.n,
                "value_ms": pct.value,
                "low_ms": pct.low,
                "high_ms": pct.high,
                "percentile": check.percentile,
                "rate_per_s": check.rate_per_s,
            },
        ),
        load_errors,
    ]


# -- logs --------------------------------------------------------------------------------------


def _started_at(container: Container) -> datetime:
    raw = str(container.attrs.get("State", {}).get("StartedAt", ""))
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?", raw)
    if not match:
        return datetime.now(UTC)
    return datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC)


def log_scan(
    platform: Platform, check: LogScan, *, service: str, since: datetime | None
) -> list[CheckResult]:
    """Error lines in each running container of the service since `since` (default: since the
    container started, that is, since the deploy that made it); on Swarm each task's container
    on its node, named with the node."""
    running = running_named(platform, check.service or service)
    if not running:
        return [
            CheckResult(
                "logs: no errors",
                F,
                "no container",
                "0 error lines",
                f"no running {check.service or service} container to read",
            )
        ]
    results = []
    for shown_name, container in running.items():
        start = since or _started_at(container)
        scan = logs_mod.scan(container, since=start, patterns=check.patterns)
        found = len(scan.matches)
        shown = "; ".join(line[:200] for line in scan.matches[:3])
        results.append(
            CheckResult(
                f"logs: no errors in {shown_name}",
                F if found else P,
                f"{found} error lines of {scan.lines_read} since {start:%Y-%m-%dT%H:%M:%SZ}",
                "0 error lines",
                f"first: {shown}" if found else "",
                {"matches": list(scan.matches[:20]), "lines_read": scan.lines_read},
            )
        )
    return results


# -- the end-to-end user flow ------------------------------------------------------------------


def user_flow(session: Session, flow: UserFlow) -> list[CheckResult]:
    """validate's flow: each step one request and one result; the flow stops at the first step
    that fails (later ones would only repeat it). The flow's own user ("flow") gets a fresh name
    and password, and logs in before its first step; captured values fill later steps."""
    checks = session.checks
    results: list[CheckResult] = []
    username = f"{flow.username_prefix}{secrets.token_hex(4)}{flow.username_suffix}"
    values: dict[str, Any] = {
        "flow.username": username,
        "flow.password": secrets.token_urlsafe(18),
    }
    tokens: dict[str, str] = {}
    client = session.client

    def refused(name: str, detail: str) -> list[CheckResult]:
        want = f"status {checks.login.expect_status}"
        return [*results, CheckResult(name, F, "login refused", want, detail)]

    for step in flow.resolved_steps(checks.admin_user):
        token: str | None = None
        if step.user == FLOW_USER:
            if FLOW_USER not in tokens:
                creds = Credentials(values["flow.username"], values["flow.password"])
                new = client.login_token(creds)
                if new is None:
                    return refused("flow: new user logs in", f"{username} cannot log in")
                results.append(CheckResult("flow: new user logs in", P, "token", "a token"))
                tokens[FLOW_USER] = new
            token = tokens[FLOW_USER]
        elif step.user:
            token = session.token(step.user)
            if token is None:
                return refused(f"flow: {step.user} login", f"test user {step.user} cannot log in")
        answer = client.request(
            step.method,
            fill_text(step.path, values),
            token=token,
            body=fill_template(step.body, values) if step.body else None,
            body_format=step.body_format,
        )
        problems = (
            []
            if answer.status == step.expect_status
            else [f"{answer.describe()}, want {step.expect_status}"]
        )
        problems += session.error_shape_problems(answer)
        for name, dotted in step.capture.items():
            got = json_get(answer.json, dotted)
            if isinstance(got, str | int | float) and not isinstance(got, bool):
                values[name] = got
            elif not problems:
                problems.append(f"{dotted} missing from the answer (captured as {name})")
        results.append(
            CheckResult(
                f"flow: {fill_text(step.name, values)}",
                F if problems else P,
                answer.describe(),
                f"status {step.expect_status}",
                "; ".join(problems),
            )
        )
        if problems:
            break
    return results


__all__ = [
    "Session",
    "all_credentials",
    "database",
    "ensure_users",
    "head_revisions",
    "latency",
    "log_scan",
    "probe",
    "probe_users",
    "rbac",
    "user_flow",
]
