"""The checks' assumptions as configuration, against real HTTP servers in this process: each
login style, form bodies, scalar bodies, provisioning, the flow as steps, where the revision is
read, per-environment credential names; and docs/checks.md's example for a notes-api-like
service, loaded with `config check`'s rules and run against a stand-in of that service."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deploytools.checks import suite as engine
from deploytools.checks.http import Credentials, HttpClient
from deploytools.checks.results import Verdict
from deploytools.cli import cli
from deploytools.config import (
    Config,
    DatabaseCheck,
    LoginSettings,
    ProbeCheck,
    parse_config,
)
from deploytools.context import StepContext
from deploytools.errors import ConfigError, EnvironmentUnreachable, UsageError
from deploytools.steps import check_suites, monitor
from tests.fakes.http_thread import serving
from tests.fakes.notes_service import NotesState, notes_service

ROOT = Path(__file__).resolve().parents[2]
P, F, INC = Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE


# -- a recording server: what each request carried, and a scripted answer ---------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Script:
    """Answers by "METHOD path": (status, body bytes, content type); or `reply`, computing the
    answer from what came."""

    answers: dict[str, tuple[int, bytes, str]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    reply: Callable[[Seen], tuple[int, bytes, str]] | None = None


NOT_FOUND = (404, b'{"detail": "Not Found"}', "application/json")


@contextmanager
def recording_server(script: Script) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen = Seen(self.command, self.path, dict(self.headers.items()), body)
            script.seen.append(seen)
            if script.reply is not None:
                status, data, kind = script.reply(seen)
            else:
                status, data, kind = script.answers.get(f"{self.command} {self.path}", NOT_FOUND)
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = answer

    with serving(Handler) as url:
        yield url


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


TOKEN_ANSWER = (200, js({"access_token": "t-123", "token_type": "bearer"}), "application/json")
ME = (200, js({"id": 1}), "application/json")


def client(url: str, **login: Any) -> HttpClient:
    return HttpClient(url, timeout_s=3, login=LoginSettings(**login))


# -- login styles ------------------------------------------------------------------------------


def test_json_login_posts_a_json_body_and_sends_a_bearer_token() -> None:
    script = Script({"POST /auth/login": TOKEN_ANSWER, "GET /me": ME})
    with recording_server(script) as url:
        http = client(url)
        token = http.token_for("u", Credentials("ann", "pw-1"))
        http.request("GET", "/me", token=token)
        http.close()
    login, me = script.seen
    assert login.headers["Content-Type"] == "application/json"
    assert json.loads(login.body) == {"username": "ann", "password": "pw-1"}
    assert me.headers["Authorization"] == "Bearer t-123"


def test_form_login_is_an_oauth2_password_grant() -> None:
    script = Script({"POST /auth/token": TOKEN_ANSWER, "GET /notes": ME})
    with recording_server(script) as url:
        http = client(url, style="form", path="/auth/token")
        token = http.token_for("u", Credentials("ann@example.com", "pw 1&2"))
        http.request("GET", "/notes", token=token)
        http.close()
    login, notes = script.seen
    assert login.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert dict(urllib.parse.parse_qsl(login.body.decode())) == {
        "username": "ann@example.com",
        "password": "pw 1&2",
        "grant_type": "password",
    }
    assert notes.headers["Authorization"] == "Bearer t-123"


def test_token_field_header_and_scheme_are_configurable() -> None:
    answer = (200, js({"data": {"jwt": "j-9"}}), "application/json")
    script = Script({"POST /login": answer, "GET /me": ME})
    with recording_server(script) as url:
        http = client(
            url,
            path="/login",
            username_field="email",
            token_field="data.jwt",
            header="X-Api-Token",
            scheme="none",
            extra={"client_id": "checks"},
        )
        http.request("GET", "/me", token=http.token_for("u", Credentials("a@b.c", "pw")))
        http.close()
    login, me = script.seen
    assert json.loads(login.body) == {"email": "a@b.c", "password": "pw", "client_id": "checks"}
    assert me.headers["X-Api-Token"] == "j-9"
    assert "Authorization" not in me.headers


def test_basic_style_sends_credentials_on_each_request_and_never_logs_in() -> None:
    script = Script({"GET /me": ME})
    with recording_server(script) as url:
        http = client(url, style="basic")
        http.request("GET", "/me", token=http.token_for("u", Credentials("ann", "pw:1")))
        http.close()
    (me,) = script.seen
    assert me.headers["Authorization"] == "Basic " + base64.b64encode(b"ann:pw:1").decode()


def test_token_style_reads_the_token_from_its_secret_and_never_logs_in(tmp_path: Path) -> None:
    config = parse_config(
        BASE_CONFIG
        + '[checks.login]\nstyle = "token"\n'
        + '[checks.users.bot]\ntoken_env = "BOT_TOKEN"\n'
        + '[[checks.probes]]\nname = "me"\nuser = "bot"\npath = "/me"\n',
        tmp_path / "deploy.toml",
    )
    script = Script({"GET /me": ME})
    with recording_server(script) as url:
        http = HttpClient(url, timeout_s=3, login=config.checks.login)
        session = engine.Session(http, config.checks, config.thresholds, {"BOT_TOKEN": "s-777"})
        result = engine.probe(session, config.checks.probes[0])
        http.close()
    assert result.verdict is P, result.line()
    assert [s.path for s in script.seen] == ["/me"]
    assert script.seen[0].headers["Authorization"] == "Bearer s-777"


def test_a_refused_login_gives_no_token_and_a_failed_probe_says_so() -> None:
    script = Script({"POST /auth/token": (400, js({"detail": "bad"}), "application/json")})
    with recording_server(script) as url:
        http = client(url, style="form", path="/auth/token")
        assert http.token_for("u", Credentials("ann", "wrong")) is None
        http.close()


# -- bodies and assertions ---------------------------------------------------------------------


def probe_against(script: Script, check: ProbeCheck, tmp_path: Path) -> engine.CheckResult:
    config = parse_config(BASE_CONFIG, tmp_path / "deploy.toml")
    with recording_server(script) as url:
        http = HttpClient(url, timeout_s=3)
        session = engine.Session(http, config.checks, config.thresholds, {})
        result = engine.probe(session, check)
        http.close()
    return result


@pytest.mark.parametrize(
    ("body", "kind", "want", "verdict"),
    [
        (b"true", "application/json", True, P),
        (b"false", "application/json", True, F),
        (b"1", "application/json", True, F),  # 1 is not true
        (b'{"status": "ok"}', "application/json", True, F),
        (b"OK\n", "text/plain", "OK", P),
        (b"degraded", "text/plain", "OK", F),
    ],
)
def test_expect_body_asserts_a_scalar_or_text_body(
    body: bytes, kind: str, want: Any, verdict: Verdict, tmp_path: Path
) -> None:
    script = Script({"GET /healthz": (200, body, kind)})
    check = ProbeCheck("health", "/healthz", expect_body=want)
    result = probe_against(script, check, tmp_path)
    assert result.verdict is verdict, result.line()
    if verdict is F:
        assert "want" in result.detail


def test_a_probe_sends_a_form_body(tmp_path: Path) -> None:
    script = Script({"POST /form": (200, b"{}", "application/json")})
    check = ProbeCheck(
        "form", "/form", method="POST", body={"a": "1 2", "flag": True}, body_format="form"
    )
    assert probe_against(script, check, tmp_path).verdict is P
    (seen,) = script.seen
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert urllib.parse.parse_qs(seen.body.decode()) == {"a": ["1 2"], "flag": ["true"]}


# -- provisioning ------------------------------------------------------------------------------

PROVISION_CONFIG = """
[checks]
admin_user = "admin"

[checks.provision]
method = "PUT"
path = "/accounts"
body = { login = "${username}", secret = "${password}", groups = ["staff", "${role}"] }
expect_status = 200

[checks.users.admin]
username_env = "A_USER"
password_env = "A_PASS"

[checks.users.made]
username_env = "M_USER"
password_env = "M_PASS"
create = true

[checks.users.ready]
username_env = "R_USER"
password_env = "R_PASS"
"""

PROVISION_ENV = {
    "A_USER": "root",
    "A_PASS": "pw-a",
    "M_USER": "made@x",
    "M_PASS": "pw-m",
    "R_USER": "ready@x",
    "R_PASS": "pw-r",
}


def test_a_refused_admin_stops_provisioning_with_one_failed_setup_result(
    tmp_path: Path,
) -> None:
    config = parse_config(BASE_CONFIG + PROVISION_CONFIG, tmp_path / "deploy.toml")
    script = Script({"POST /auth/login": (401, b"{}", "application/json")})
    with recording_server(script) as url:
        http = HttpClient(url, timeout_s=3, login=config.checks.login)
        session = engine.Session(http, config.checks, config.thresholds, PROVISION_ENV)
        results = engine.ensure_users(session)
        http.close()
    assert [(r.name, r.verdict) for r in results] == [("setup: admin login (admin)", F)]
    assert [s.method for s in script.seen] == ["POST", "POST"]  # made, then the admin


def test_the_provision_request_fills_the_template_and_leaves_out_an_empty_role(
    tmp_path: Path,
) -> None:
    config = parse_config(BASE_CONFIG + PROVISION_CONFIG, tmp_path / "deploy.toml")

    def reply(seen: Seen) -> tuple[int, bytes, str]:
        if seen.method == "POST":  # a login: only the admin's succeeds
            ok = json.loads(seen.body)["username"] == "root"
            return (200, js({"access_token": "adm"}), "application/json") if ok else NOT_FOUND
        return 200, b"{}", "application/json"

    script = Script(reply=reply)
    with recording_server(script) as url:
        http = HttpClient(url, timeout_s=3, login=config.checks.login)
        session = engine.Session(http, config.checks, config.thresholds, PROVISION_ENV)
        results = engine.ensure_users(session)
        http.close()
    logins = [json.loads(s.body)["username"] for s in script.seen if s.method == "POST"]
    (put,) = [s for s in script.seen if s.method == "PUT"]
    assert [(r.name, r.verdict) for r in results] == [("setup: create test user made", P)]
    assert put.path == "/accounts" and put.headers["Authorization"] == "Bearer adm"
    assert json.loads(put.body) == {"login": "made@x", "secret": "pw-m", "groups": ["staff"]}
    # "ready" is pre-provisioned: never logged in as here, never created.
    assert "ready@x" not in logins


# -- the flow as steps -------------------------------------------------------------------------


def test_flow_steps_capture_values_and_stop_at_the_first_failure(tmp_path: Path) -> None:
    state = NotesState(users={"root@x": ("pw-root", True)})
    text = BASE_CONFIG + NOTES_FLOW
    config = parse_config(text, tmp_path / "deploy.toml")
    env = {"SU": "root@x", "SU_PW": "pw-root"}
    with notes_service(state) as url:
        http = HttpClient(url, timeout_s=3, login=config.checks.login)
        session = engine.Session(http, config.checks, config.thresholds, env)
        assert config.checks.flow is not None
        results = engine.user_flow(session, config.checks.flow)
        http.close()
    names = [r.name for r in results]
    assert [r.verdict for r in results] == [P, P, P, F], [r.line() for r in results]
    assert names[0].startswith("flow: superuser creates flow-") and names[0].endswith("@x.org")
    assert names[1] == "flow: new user logs in"
    # The captured id went into the next step's body.
    assert state.notes[0]["body"] == "user 2"
    assert names[3] == "flow: expects 200 on a superuser route"
    assert "status 403, want 200" in results[3].detail


NOTES_FLOW = """
[checks]
admin_user = "su"
error_fields = ["detail"]

[checks.login]
style = "form"
path = "/auth/token"

[checks.users.su]
username_env = "SU"
password_env = "SU_PW"

[checks.flow]
username_prefix = "flow-"
username_suffix = "@x.org"

[[checks.flow.steps]]
name = "superuser creates ${flow.username}"
user = "su"
method = "POST"
path = "/users"
body = { email = "${flow.username}", password = "${flow.password}" }
expect_status = 201
capture = { uid = "id" }

[[checks.flow.steps]]
name = "note"
user = "flow"
method = "POST"
path = "/notes"
body = { title = "t", body = "user ${uid}" }
expect_status = 201

[[checks.flow.steps]]
name = "expects 200 on a superuser route"
user = "flow"
method = "POST"
path = "/users"
body = { email = "y", password = "z" }

[[checks.flow.steps]]
name = "never reached"
path = "/notes"
"""


# -- the database revision ---------------------------------------------------------------------


def revision_results(
    health: bytes, check: DatabaseCheck, stored: Any, tmp_path: Path
) -> list[engine.CheckResult]:
    config = parse_config(BASE_CONFIG, tmp_path / "deploy.toml")
    script = Script({"GET /health": (200, health, "application/json")})
    with recording_server(script) as url:
        http = HttpClient(url, timeout_s=3)
        session = engine.Session(http, config.checks, config.thresholds, {})
        results = engine.database(
            session, check, suite="verify", heads=lambda: ("0003",), stored_revision=stored
        )
        http.close()
    return results


REPORTS = js({"database": {"reachable": True, "round_trip_ms": 1, "alembic_revision": "0003"}})


def test_auto_reads_the_revision_from_health_when_it_reports_one(tmp_path: Path) -> None:
    asked: list[int] = []
    check = DatabaseCheck(suites=())
    results = revision_results(REPORTS, check, lambda: asked.append(1) or "0001", tmp_path)
    assert [(r.name, r.verdict) for r in results] == [("database migrated", P)]
    assert asked == []


def test_auto_reads_alembic_version_when_health_does_not_report_it(tmp_path: Path) -> None:
    check = DatabaseCheck(path="/health", reachable_field="", suites=())
    (result,) = revision_results(b"true", check, lambda: "0002", tmp_path)
    assert result.verdict is F
    assert result.measured == "revision 0002"
    assert "the database is at 0002, the release expects 0003" in result.detail


def test_revision_from_database_ignores_the_health_answer(tmp_path: Path) -> None:
    # Health reports an old revision: only a read of alembic_version (0003, head) passes.
    stale = js({"database": {"reachable": True, "round_trip_ms": 1, "alembic_revision": "0001"}})
    check = DatabaseCheck(revision_from="database", suites=())
    (result,) = revision_results(stale, check, lambda: "0003", tmp_path)
    assert result.verdict is P


def test_an_unreadable_alembic_version_is_named(tmp_path: Path) -> None:
    def down() -> str | None:
        raise EnvironmentUnreachable('the database service "db" of environment x is not running')

    check = DatabaseCheck(revision_from="database", suites=())
    (result,) = revision_results(REPORTS, check, down, tmp_path)
    assert result.verdict is F
    assert "alembic_version unreadable" in result.measured


# -- per-environment credential names ----------------------------------------------------------


def test_a_user_s_secret_names_can_differ_per_environment(tmp_path: Path) -> None:
    config = parse_config(
        BASE_CONFIG
        + '[environments.production]\ncompose_project = "dtchecks-prod"\n'
        + 'base_url = "http://127.0.0.1:1"\n'
        + '[checks.users.v]\nusername_env = "V_USER"\npassword_env = "V_PASS"\n'
        + '[checks.users.v.environments.production]\npassword_env = "PROD_V_PASS"\n',
        tmp_path / "deploy.toml",
    )
    env = {"V_USER": "vic", "V_PASS": "staging-pw", "PROD_V_PASS": "prod-pw"}
    http = HttpClient("http://127.0.0.1:1", timeout_s=1)
    staging = engine.Session(http, config.checks, config.thresholds, env, environment="local")
    production = engine.Session(
        http, config.checks, config.thresholds, env, environment="production"
    )
    assert staging.credentials("v").password == "staging-pw"
    assert production.credentials("v") == Credentials("vic", "prod-pw")
    missing = engine.Session(
        http, config.checks, config.thresholds, {"V_USER": "vic"}, environment="production"
    )
    with pytest.raises(UsageError, match=r"'v' for production are not set: PROD_V_PASS"):
        missing.credentials("v")


# -- configuration errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            '[checks.login]\nstyle = "oauth"\n',
            '"checks.login.style" must be one of json, form, basic, token, got "oauth"',
        ),
        (
            '[checks.login]\nstyle = "token"\n[checks.users.a]\nusername_env = "U"\n'
            'password_env = "P"\n',
            '"checks.users.a" needs "token_env": [checks.login] style is "token"',
        ),
        (
            '[checks.users.a]\nusername_env = "U"\n',
            '"checks.users.a" needs "username_env" and "password_env"',
        ),
        (
            '[checks.users.a]\nusername_env = "U"\npassword_env = "P"\n'
            '[checks.users.a.environments.prod]\npassword_env = "Q"\n',
            '"checks.users.a.environments.prod": "prod" is not a key of [environments]',
        ),
        (
            '[[checks.probes]]\nname = "h"\npath = "/h"\nexpect_body = true\n'
            "expect_json = { a = 1 }\n",
            '"checks.probes[0].expect_body" is the whole body',
        ),
        (
            '[[checks.probes]]\nname = "h"\npath = "/h"\nbody_format = "xml"\n',
            '"checks.probes[0].body_format" must be one of json, form, got "xml"',
        ),
        (
            '[checks.flow]\n[[checks.flow.steps]]\nname = "s"\npath = "/x"\nuser = "bob"\n',
            '"checks.flow.steps[0].user" is "bob", not a key of [checks.users] nor "flow"',
        ),
        (
            "[checks.flow]\n",
            '[checks.flow] needs "role" and "resource" (the role flow), or [[checks.flow.steps]]',
        ),
        (
            '[checks.database]\nrevision_from = "health-route"\n',
            '"checks.database.revision_from" must be one of auto, health, database',
        ),
        (
            '[checks.users.a]\nusername_env = "U"\npassword_env = "P"\ncreate = true\n',
            '"checks.users.a.create" is true: creating a missing user needs "checks.admin_user"',
        ),
        (
            "[checks.provision]\nexpect_status = 42\n",
            '"checks.provision.expect_status" must be',
        ),
    ],
)
def test_bad_check_configuration_is_refused_with_its_key(
    extra: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE_CONFIG + extra, tmp_path / "deploy.toml")
    assert message in str(caught.value)


# -- monitor without /metrics ------------------------------------------------------------------


def test_monitor_without_metric_rules_never_reads_metrics_and_does_not_breach(
    tmp_path: Path,
) -> None:
    script = Script({"GET /healthz": (200, b"true", "application/json")})
    with recording_server(script) as url:
        config = parse_config(
            BASE_CONFIG.replace("http://127.0.0.1:1", url)
            + "[checks.monitor]\ncontainer_stats = false\n"
            + '[[checks.probes]]\nname = "health"\npath = "/healthz"\nexpect_body = true\n'
            + 'suites = ["monitor"]\n',
            tmp_path / "deploy.toml",
        )
        now = [0.0]
        report = monitor.run(
            StepContext(config),
            environment="local",
            duration_s=3,
            interval_s=1,
            environ={},
            clock=lambda: now[0],
            sleep=lambda s: now.__setitem__(0, now[0] + s),
        )
    assert report.verdict is P and report.breaches == ()
    assert {s.path for s in script.seen} == {"/healthz"}


# -- the example of docs/checks.md -------------------------------------------------------------

BASE_CONFIG = """
[project]
name = "svc"
image_repository = "example/svc"
compose_files = ["docker-compose.prod.yml"]
app_service = "app"
database_service = "db"
migration_command = ["true"]

[environments.local]
compose_project = "dtchecks-unit"
base_url = "http://127.0.0.1:1"

"""


def docs_example() -> str:
    text = (ROOT / "docs" / "checks.md").read_text(encoding="utf-8")
    match = re.search(
        r"<!-- checks-example: begin -->\n```toml\n(.*?)```\n<!-- checks-example: end -->",
        text,
        re.S,
    )
    assert match, "docs/checks.md lost its checks example"
    return match.group(1)


NOTES_ENV = {
    "FIRST_SUPERUSER": "admin@example.com",
    "FIRST_SUPERUSER_PASSWORD": "superuser-pw-123",
    "CHECK_WRITER_EMAIL": "writer@example.com",
    "CHECK_WRITER_PASSWORD": "writer-pw-123",
}


NOTES_HEADER = BASE_CONFIG.replace("http://127.0.0.1:1", "BASE_URL") + (
    '[environments.production]\ncompose_project = "dtchecks-prod"\n'
    'base_url = "http://127.0.0.1:1"\n\n'
    # Generous: these tests are about the checks' logic, not this machine's speed.
    "[thresholds]\nhealth_ms = 5000.0\napi_p95_ms = 5000.0\n\n"
)


def notes_config(url: str, tmp_path: Path) -> Config:
    text = NOTES_HEADER.replace("BASE_URL", url) + docs_example()
    return parse_config(text, tmp_path / "deploy.toml")


def test_the_docs_example_passes_config_check(tmp_path: Path) -> None:
    config = notes_config("http://127.0.0.1:8000", tmp_path)
    path = tmp_path / "deploy.toml"
    path.write_text(NOTES_HEADER.replace("BASE_URL", "http://127.0.0.1:8000") + docs_example())
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "check"], env={})
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
    writer = config.checks.users["writer"]
    assert writer.secrets_in("production").username_env == "PROD_CHECK_WRITER_EMAIL"
    assert config.checks.metrics == ()


def test_the_notes_example_carries_the_docs_example_and_passes_config_check() -> None:
    """examples/notes-api/deploy.toml's checks are this very block: the integration tier runs
    them against the real notes-api, so the docs' example is held to the real service too."""
    example = ROOT / "examples" / "notes-api" / "deploy.toml"
    assert docs_example() in example.read_text(encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(example), "config", "check"], env={})
    assert result.exit_code == 0, result.output


@pytest.fixture
def notes() -> Iterator[tuple[str, NotesState]]:
    state = NotesState(users={"admin@example.com": ("superuser-pw-123", True)})
    with notes_service(state) as url:
        yield url, state


def run_suite(config: Config, suite: str) -> check_suites.SuiteReport:
    # The database check reads alembic_version, and the log scan the containers, through Docker:
    # those are the integration tier's (the revision's logic is tested above with a stand-in).
    no_db = dataclasses.replace(
        config, checks=dataclasses.replace(config.checks, database=None, logs=None)
    )
    lat = tuple(
        dataclasses.replace(x, rate_per_s=50.0, duration_s=2.0) for x in config.checks.latency
    )
    no_db = dataclasses.replace(no_db, checks=dataclasses.replace(no_db.checks, latency=lat))
    return check_suites.run(StepContext(no_db), environment="local", suite=suite, environ=NOTES_ENV)


def test_the_docs_example_smoke_and_validate_pass_on_a_notes_like_service(
    notes: tuple[str, NotesState], tmp_path: Path
) -> None:
    url, state = notes
    config = notes_config(url, tmp_path)
    smoke = run_suite(config, "smoke")
    lines = "\n".join(r.line() for r in smoke.results)
    assert smoke.verdict is P, lines
    assert smoke.results[0].name == "setup: create test user writer"
    assert "writer@example.com" in state.users
    validate = run_suite(config, "validate")
    lines = "\n".join(r.line() for r in validate.results)
    assert validate.verdict is P, lines
    names = [r.name for r in validate.results]
    assert "flow: new user may not create users" in names
    assert "rbac: writer (writer) POST /users -> 403" in names
    # Every login was form-encoded, as the service demands.
    kinds = {k for m, p, k in state.seen if p == "/auth/token"}
    assert kinds == {"application/x-www-form-urlencoded"}


def test_the_docs_example_fails_when_the_health_route_answers_false(
    notes: tuple[str, NotesState], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = notes
    from tests.fakes import notes_service as fake

    original = fake.NotesHandler._route

    def unhealthy(self: fake.NotesHandler, method: str) -> tuple[int, Any]:
        if self.path == "/healthz":
            self._raw()
            return 200, False
        return original(self, method)

    monkeypatch.setattr(fake.NotesHandler, "_route", unhealthy)
    report = run_suite(notes_config(url, tmp_path), "smoke")
    health = next(r for r in report.results if r.name == "health")
    assert health.verdict is F
    assert "body is false, want true" in health.detail
