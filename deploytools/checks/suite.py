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
    has_field,
    json_get,
    json_mismatches,
    read_credentials,
)
from deploytools.checks.load import open_load
from deploytools.checks.results import CheckResult, Verdict
from deploytools.config import (
    ChecksConfig,
    DatabaseCheck,
    LatencyCheck,
    LogScan,
    ProbeCheck,
    RbacCheck,
    Thresholds,
    UserFlow,
)

# For annotations only: the suite is handed containers and a target, it never opens them.
if TYPE_CHECKING:
    from deploytools.engine.client import Container
    from deploytools.target import Target

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
    _credentials: dict[str, Credentials] = field(default_factory=dict)

    def credentials(self, user: str) -> Credentials:
        if user not in self._credentials:
            self._credentials[user] = read_credentials(user, self.checks.users[user], self.environ)
        return self._credentials[user]

    def token(self, user: str) -> str | None:
        return self.client.token_for(user, self.credentials(user)) if user else None

    def threshold(self, name: str) -> float:
        return float(getattr(self.thresholds, name))

    def substitute(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """`${user.username}` / `${user.password}` in body strings -> the test user's values."""

        def one(value: Any) -> Any:
            if not isinstance(value, str):
                return value
            match = re.fullmatch(r"\$\{([A-Za-z0-9_-]+)\.(username|password)\}", value)
            if not match:
                return value
            creds = self.credentials(match.group(1))
            return creds.username if match.group(2) == "username" else creds.password

        return {k: one(v) for k, v in body.items()}

    def error_shape_problems(self, answer: Answer) -> list[str]:
        """An error answer (4xx/5xx) must carry the documented fields ([checks] error_fields)."""
        if answer.status < 400 or not self.checks.error_fields:
            return []
        missing = [f for f in self.checks.error_fields if not has_field(answer.json, f)]
        return [f"error answer lacks {', '.join(missing)}"] if missing else []


def probe_users(check: ProbeCheck) -> list[str]:
    """The test users a probe needs: its `user`, and those its body names (`${viewer.password}`)."""
    names = [check.user] if check.user else []
    for value in check.body.values():
        match = re.fullmatch(r"\$\{([A-Za-z0-9_-]+)\.(username|password)\}", str(value))
        if match:
            names.append(match.group(1))
    return names


def all_credentials(session: Session, names: list[str]) -> None:
    """Read every credential the run needs first, so a missing one stops it before it starts."""
    for name in names:
        session.credentials(name)


# -- set-up ------------------------------------------------------------------------------------


def ensure_users(session: Session) -> list[CheckResult]:
    """Create test users that cannot log in yet and have a role to be created with.

    Only missing users are created; an existing user's roles are never changed, so a role
    revoked behind the checks' back still shows up as a failed RBAC check.
    """
    checks = session.checks
    if not checks.admin_user:
        return []
    results: list[CheckResult] = []
    for name, user in checks.users.items():
        if name == checks.admin_user or not user.role:
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
                    "status 200",
                    "cannot create missing test users: the admin's credentials are not accepted",
                )
            )
            return results
        answer = session.client.request(
            "POST",
            checks.users_path,
            token=admin_token,
            body={"username": creds.username, "password": creds.password, "roles": [user.role]},
        )
        ok = answer.status == 201
        results.append(
            CheckResult(
                f"setup: create test user {name} ({user.role})",
                P if ok else F,
                answer.describe(),
                "status 201",
                ""
                if ok
                else "the user exists with another password, or the admin may not create it",
            )
        )
    return results


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
        session.client.request(check.method, check.path, token=token, body=body)
        for _ in range(repeats)
    ]
    answer = answers[-1]
    problems: list[str] = []
    wrong = [a for a in answers if a.status != check.expect_status]
    if wrong:
        problems.append(f"{wrong[0].describe()}, want {check.expect_status}")
    else:
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
    answer = session.client.request(check.method, check.path, token=token, body=body)
    problems: list[str] = []
    if answer.status != check.expect_status:
        problems.append(
            f"{check.user} got {answer.status or 'no answer'} on {check.method} {check.path}, "
            f"want {check.expect_status}" + (f" ({answer.error})" if answer.error else "")
        )
        required = json_get(answer.json, "error.required_permission")
        if isinstance(required, str):
            problems.append(f"the service says it requires {required!r}")
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


def head_revisions(target: Target, service: str, command: tuple[str, ...]) -> tuple[str, ...]:
    """The head revision(s) of the migrations shipped in the running app image."""
    running = target.containers(service, include_stopped=False)
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
) -> list[CheckResult]:
    """Reachable (and its round trip) in the check's suites; the revision in revision_suites."""
    answer = session.client.request("GET", check.path)
    results: list[CheckResult] = []
    reachable = json_get(answer.json, check.reachable_field)
    limit = session.threshold("database_latency_ms")
    if suite in check.suites:
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
        current = json_get(answer.json, check.revision_field)
        current_text = current if isinstance(current, str) else "unknown"
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
    target: Target, check: LogScan, *, service: str, since: datetime | None
) -> list[CheckResult]:
    """Error lines in each running container of the service since `since` (default: since the
    container started, that is, since the deploy that made it)."""
    running = target.containers(check.service or service, include_stopped=False)
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
    for container in running:
        start = since or _started_at(container)
        scan = logs_mod.scan(container, since=start, patterns=check.patterns)
        found = len(scan.matches)
        shown = "; ".join(line[:200] for line in scan.matches[:3])
        results.append(
            CheckResult(
                f"logs: no errors in {container.name}",
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
    """Create a user, deny, assign a role, allow, revoke, deny: each step one result; the flow
    stops at the first step that fails (later ones would only repeat it)."""
    checks = session.checks
    results: list[CheckResult] = []
    admin = session.token(checks.admin_user)
    if admin is None:
        return [
            CheckResult(
                "flow: admin login",
                F,
                "login refused",
                "status 200",
                f"admin user {checks.admin_user} cannot log in",
            )
        ]
    username = f"{flow.username_prefix}{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    client = session.client

    def step(name: str, answer: Answer, want: int, extra: list[str] | None = None) -> bool:
        problems = [] if answer.status == want else [f"{answer.describe()}, want {want}"]
        problems += extra or []
        results.append(
            CheckResult(
                f"flow: {name}",
                F if problems else P,
                answer.describe(),
                f"status {want}",
                "; ".join(problems),
            )
        )
        return not problems

    created = client.request(
        "POST",
        flow.users_path,
        token=admin,
        body={"username": username, "password": password, "roles": []},
    )
    if not step(f"admin creates user {username}", created, 201):
        return results
    user_id = json_get(created.json, "id")
    login = client.login(Credentials(username, password))
    token = json_get(login.json, checks.login.token_field)
    if not step("new user logs in", login, 200) or not isinstance(token, str):
        return results
    denied = client.request("GET", flow.resource, token=token)
    if not step(
        f"without a role: GET {flow.resource} denied",
        denied,
        403,
        session.error_shape_problems(denied),
    ):
        return results
    assign = client.request(
        "POST",
        flow.assign_path.format(id=user_id, role=flow.role),
        token=admin,
        body={"role": flow.role},
    )
    if not step(f"admin assigns role {flow.role}", assign, 200):
        return results
    allowed = client.request("GET", flow.resource, token=token)
    if not step(f"with {flow.role}: GET {flow.resource} allowed", allowed, 200):
        return results
    revoke = client.request(
        "DELETE", flow.revoke_path.format(id=user_id, role=flow.role), token=admin
    )
    if not step(f"admin revokes role {flow.role}", revoke, 200):
        return results
    again = client.request("GET", flow.resource, token=token)
    step(
        f"after revoke: GET {flow.resource} denied", again, 403, session.error_shape_problems(again)
    )
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
