"""The reference service (examples/rbac-api) and its production stack, on real PostgreSQL."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import requests

if TYPE_CHECKING:  # fixtures' types; pytest provides the objects
    from tests.helpers.shared_stack import SharedStack
    from tests.helpers.stacks import ComposeStack, ReleaseImages, ReleaseRepo

pytestmark = pytest.mark.integration

V1, V2 = "1.15.1", "1.15.2"


# ---- helpers ---------------------------------------------------------------------------------


def as_json(response: requests.Response) -> dict:
    try:
        return response.json()
    except json.JSONDecodeError as exc:
        raise AssertionError(f"{response.status_code} without JSON: {response.text[:300]}") from exc


@dataclass
class Api:
    """A tiny client for rbac-api, authenticated as one user."""

    base: str
    token: str | None = None

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return requests.request(method, f"{self.base}{path}", headers=headers, timeout=10, **kwargs)

    @classmethod
    def login(cls, base: str, username: str, password: str) -> Api:
        response = requests.post(
            f"{base}/auth/login", json={"username": username, "password": password}, timeout=10
        )
        assert response.status_code == 200, response.text
        return cls(base, as_json(response)["access_token"])


def admin_api(stack: ComposeStack) -> Api:
    assert stack.admin is not None
    return Api.login(stack.url, *stack.admin)


def new_user(admin: Api, role: str) -> tuple[int, Api]:
    username, password = f"{role}-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    response = admin.call(
        "POST", "/users", json={"username": username, "password": password, "roles": [role]}
    )
    assert response.status_code == 201, response.text
    assert as_json(response)["roles"] == [role]
    return as_json(response)["id"], Api.login(admin.base, username, password)


def poll(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text format; 0 if the series is absent."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if found == labels:
            return float(match.group(3))
    return 0.0


def check_release_behaviour(stack: ComposeStack) -> None:
    """What any release must do: login, RBAC refusals with the documented body, documents."""
    admin = admin_api(stack)
    wrong = requests.post(
        f"{stack.url}/auth/login",
        json={"username": stack.admin[0], "password": "wrong-password"},
        timeout=10,
    )
    assert wrong.status_code == 401
    assert as_json(wrong)["error"]["code"] == "unauthorized"

    _, viewer = new_user(admin, "viewer")
    _, editor = new_user(admin, "editor")
    created = editor.call("POST", "/documents", json={"title": "runbook", "body": "step 1"})
    assert created.status_code == 201, created.text
    refused = viewer.call("POST", "/documents", json={"title": "nope"})
    assert refused.status_code == 403
    assert as_json(refused) == {
        "error": {
            "code": "forbidden",
            "message": "this action requires the permission 'documents:write'",
            "required_permission": "documents:write",
        }
    }
    listed = viewer.call("GET", "/documents")
    assert listed.status_code == 200
    assert as_json(created)["id"] in [d["id"] for d in as_json(listed)["documents"]]
    assert (
        viewer.call("POST", "/users", json={"username": "x", "password": "y" * 12}).status_code
        == 403
    )


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(dtdep_stack: SharedStack) -> ComposeStack:
    """The shared 1.15.1 stack (migrated, with an admin) as first set up; for the tests that do
    not change its schema."""
    dtdep_stack.reset()
    return dtdep_stack.stack


@dataclass
class Upgrade:
    stack: ComposeStack
    rows_before: dict[str, int]
    rows_after: dict[str, int]
    migrate_output: str


@pytest.fixture(scope="module")
def upgraded(dtdep_stack: SharedStack, release_images: ReleaseImages) -> Upgrade:
    """The shared 1.15.1 stack, as first set up, given data, whose database is then migrated by
    the 1.15.2 image (after the tests of `stack`, which run first)."""
    dtdep_stack.reset()
    stack = dtdep_stack.stack
    admin = admin_api(stack)
    for role in ("viewer", "editor", "editor"):
        user_id, api = new_user(admin, role)
        if role == "editor":
            for n in range(3):
                assert (
                    api.call(
                        "POST", "/documents", json={"title": f"doc {n}", "body": "x" * 100}
                    ).status_code
                    == 201
                )
        assert (
            admin.call("POST", f"/users/{user_id}/roles", json={"role": "viewer"}).status_code
            == 200
        )
    rows_before = stack.table_row_counts()
    migrated = stack.migrate(app_image=release_images[V2])
    return Upgrade(stack, rows_before, stack.table_row_counts(), migrated.stdout + migrated.stderr)


# ---- images ----------------------------------------------------------------------------------


def test_release_images_carry_their_own_migrations_and_labels(
    docker_client, release_images: ReleaseImages, release_repo: ReleaseRepo
) -> None:
    for version, head in ((V1, "0001"), (V2, "0002")):
        image = docker_client.images.get(release_images[version])
        labels = image.labels
        assert labels["org.opencontainers.image.version"] == version
        assert labels["org.opencontainers.image.revision"] == release_repo.commit(f"v{version}")
        assert labels["org.opencontainers.image.created"] == release_repo.commit_date(f"v{version}")
        assert labels["org.opencontainers.image.source"].startswith("https://")
        config = image.attrs["Config"]
        assert config["User"] == "app"
        assert "8080/tcp" in config["ExposedPorts"]
        assert config["Healthcheck"]["Test"][0] in ("CMD", "CMD-SHELL")
        assert f"APP_VERSION={version}" in config["Env"]
        heads = docker_client.containers.run(
            image.id, ["alembic", "-c", "/app/alembic.ini", "heads"], remove=True
        ).decode()
        assert heads.split() == [head, "(head)"], heads
        files = docker_client.containers.run(
            image.id, ["ls", "/app/migrations/versions"], remove=True
        ).decode()
        assert ("0002_role_assignment_audit.py" in files) == (version == V2)
    # The migration SQL carries its safety rails: timeouts and the migrator lock.
    sql = docker_client.containers.run(
        release_images[V2],
        ["alembic", "-c", "/app/alembic.ini", "upgrade", "head", "--sql"],
        remove=True,
        environment={"DATABASE_URL": "postgresql+psycopg2://offline@nowhere/rbac"},
    ).decode()
    assert "SET LOCAL lock_timeout = '5s'" in sql
    assert "SET LOCAL statement_timeout = '60s'" in sql
    assert "pg_advisory_xact_lock(" in sql
    assert sql.index("pg_advisory_xact_lock(") < sql.index("CREATE TABLE users")


# ---- the 1.15.1 stack ------------------------------------------------------------------------


def test_stack_comes_up_healthy(stack: ComposeStack) -> None:
    for service in ("app", "db"):
        # the fixture's wait ends at the healthcheck's first pass; this asserts the engine's
        # own status, which follows at its next scheduled probe
        stack.wait_healthy(service, engine_status=True)
        container = stack.container(service)
        assert container.attrs["State"]["Health"]["Status"] == "healthy"
        assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert stack.container("db").attrs["NetworkSettings"]["Ports"].get("5432/tcp") is None
    assert stack.container("app").labels["deploytools.app.version"] == V1

    started = time.perf_counter()
    response = requests.get(f"{stack.url}/health", timeout=5)
    elapsed_ms = (time.perf_counter() - started) * 1000
    body = as_json(response)
    assert response.status_code == 200
    assert body["status"] == "ok"
    assert body["version"] == V1
    assert body["database"]["reachable"] is True
    assert body["database"]["alembic_revision"] == "0001"
    assert 0 <= body["database"]["round_trip_ms"] < 100
    assert elapsed_ms < 500  # generous for a 2-core CI machine; typically a few ms


def test_login_and_wrong_password(stack: ComposeStack) -> None:
    admin = admin_api(stack)
    me = admin.call("GET", "/me")
    assert me.status_code == 200
    assert as_json(me)["username"] == stack.admin[0]
    assert as_json(me)["roles"] == ["admin"]
    assert set(as_json(me)["permissions"]) == {
        "users:manage",
        "roles:assign",
        "documents:read",
        "documents:write",
    }

    wrong = requests.post(
        f"{stack.url}/auth/login",
        json={"username": stack.admin[0], "password": "not-it"},
        timeout=10,
    )
    assert wrong.status_code == 401
    assert as_json(wrong)["error"]["code"] == "unauthorized"
    anonymous = requests.get(f"{stack.url}/me", timeout=10)
    assert anonymous.status_code == 401
    assert as_json(anonymous)["error"]["code"] == "unauthorized"
    forged = Api(
        stack.url, admin.token[:-2] + ("AA" if not admin.token.endswith("AA") else "BB")
    ).call("GET", "/me")
    assert forged.status_code == 401


def test_viewer_is_refused_admin_endpoints_with_documented_body(stack: ComposeStack) -> None:
    admin = admin_api(stack)
    viewer_id, viewer = new_user(admin, "viewer")
    cases = [
        ("GET", "/users", None, "users:manage"),
        (
            "POST",
            "/users",
            {"username": "mallory", "password": "m" * 16, "roles": ["admin"]},
            "users:manage",
        ),
        ("POST", f"/users/{viewer_id}/roles", {"role": "admin"}, "roles:assign"),
        ("DELETE", f"/users/{viewer_id}/roles/viewer", None, "roles:assign"),
    ]
    for method, path, payload, permission in cases:
        response = viewer.call(method, path, json=payload)
        assert response.status_code == 403, (method, path, response.text)
        assert as_json(response) == {
            "error": {
                "code": "forbidden",
                "message": f"this action requires the permission '{permission}'",
                "required_permission": permission,
            }
        }
    assert as_json(viewer.call("GET", "/me"))["roles"] == ["viewer"]  # nothing was granted


def test_editor_writes_documents_and_viewer_cannot(stack: ComposeStack) -> None:
    check_release_behaviour(stack)
    admin = admin_api(stack)
    user_id, api = new_user(admin, "viewer")
    assert api.call("POST", "/documents", json={"title": "t"}).status_code == 403
    granted = admin.call("POST", f"/users/{user_id}/roles", json={"role": "editor"})
    assert granted.status_code == 200 and as_json(granted)["roles"] == ["editor", "viewer"]
    assert api.call("POST", "/documents", json={"title": "t"}).status_code == 201
    revoked = admin.call("DELETE", f"/users/{user_id}/roles/editor")
    assert revoked.status_code == 200 and as_json(revoked)["roles"] == ["viewer"]
    assert api.call("POST", "/documents", json={"title": "t"}).status_code == 403


def test_metrics_move_with_traffic(stack: ComposeStack) -> None:
    def scrape() -> str:
        response = requests.get(f"{stack.url}/metrics", timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.text

    before = scrape()
    for _ in range(3):
        requests.post(
            f"{stack.url}/auth/login",
            json={"username": "nobody", "password": "nothing"},
            timeout=10,
        )
    admin = admin_api(stack)
    for _ in range(4):
        assert admin.call("GET", "/documents").status_code == 200
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("rbac_logins_total", outcome="invalid_credentials") == 3
    assert delta("rbac_logins_total", outcome="success") == 1
    assert delta("rbac_http_requests_total", method="POST", route="/auth/login", status="401") == 3
    assert delta("rbac_http_requests_total", method="GET", route="/documents", status="200") == 4
    assert delta("rbac_http_request_duration_seconds_count", method="GET", route="/documents") == 4
    assert (
        delta(
            "rbac_permission_check_duration_seconds_count",
            permission="documents:read",
            result="allowed",
        )
        == 4
    )
    assert delta("rbac_db_query_duration_seconds_count") >= 4
    assert metric_value(after, "rbac_app_info", version=V1) == 1


def test_logs_are_json_lines_with_a_level(stack: ComposeStack) -> None:
    requests.get(f"{stack.url}/no-such-page", timeout=10)
    lines = stack.container("app").logs().decode().splitlines()
    assert len(lines) > 3
    entries = [json.loads(line) for line in lines]
    assert all(
        entry["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") for entry in entries
    )
    assert any(
        entry.get("path") == "/no-such-page" and entry.get("status") == 404 for entry in entries
    )


def test_two_migrators_never_run_at_once(stack: ComposeStack) -> None:
    """While another session holds the migration lock, `alembic upgrade` waits for it."""
    holder = stack.container("db").exec_run(
        [
            "psql",
            "-X",
            "-U",
            stack.env["POSTGRES_USER"],
            "-d",
            stack.env["POSTGRES_DB"],
            "-c",
            "SELECT pg_advisory_lock(7215190001), pg_sleep(4)",
        ],
        detach=True,
    )
    del holder
    poll(
        lambda: (
            stack.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
            == "1"
        ),
        timeout=10,
        what="the test session to hold the migration lock",
    )
    started = time.monotonic()
    stack.migrate()
    waited = time.monotonic() - started
    assert waited > 2.5, f"the migrator did not wait for the lock (took {waited:.1f}s)"


# ---- upgrade 1.15.1 -> 1.15.2 ----------------------------------------------------------------


def test_upgrade_to_1_15_2_schema_keeps_every_row(upgraded: Upgrade) -> None:
    assert "Running upgrade 0001 -> 0002" in upgraded.migrate_output
    assert upgraded.rows_before["documents"] == 6
    assert upgraded.rows_before["users"] == 4
    for table, count in upgraded.rows_before.items():
        assert upgraded.rows_after[table] == count, table
    assert set(upgraded.rows_after) - set(upgraded.rows_before) == {"role_assignment_audit"}
    assert upgraded.stack.psql("SELECT version_num FROM alembic_version") == "0002"
    # The 1.15.1 app that kept running sees the new revision and still reports its own version.
    health = upgraded.stack.health()
    assert health["database"]["alembic_revision"] == "0002"
    assert health["version"] == V1
    # A second migrator finds nothing to do.
    again = upgraded.stack.migrate(app_image=upgraded.stack.env["APP_IMAGE"].replace(V1, V2))
    assert "Running upgrade" not in again.stdout + again.stderr


def test_1_15_1_app_passes_its_checks_on_1_15_2_schema(upgraded: Upgrade) -> None:
    stack = upgraded.stack
    check_release_behaviour(stack)
    # ... also after a restart of the 1.15.1 container on the new schema.
    stack.run_compose("up", "-d", "--force-recreate", "app")
    stack.wait_healthy("app")
    assert stack.health()["version"] == V1
    check_release_behaviour(stack)
    titles = [d["title"] for d in as_json(admin_api(stack).call("GET", "/documents"))["documents"]]
    assert titles.count("doc 0") == 2  # the rows written before the upgrade are all there


def test_1_15_2_app_audits_role_assignments(
    upgraded: Upgrade, release_images: ReleaseImages
) -> None:
    stack = upgraded.stack
    stack.up("app", env={"APP_IMAGE": release_images[V2], "APP_VERSION": V2})
    assert stack.health()["version"] == V2
    assert stack.container("app").labels["deploytools.app.version"] == V2
    check_release_behaviour(stack)
    admin = admin_api(stack)
    user_id, viewer = new_user(admin, "viewer")
    assert admin.call("POST", f"/users/{user_id}/roles", json={"role": "editor"}).status_code == 200
    assert admin.call("DELETE", f"/users/{user_id}/roles/editor").status_code == 200
    audit = admin.call("GET", f"/audit/role-assignments?user_id={user_id}")
    assert audit.status_code == 200
    entries = as_json(audit)["entries"]
    assert [(e["action"], e["role"]) for e in entries] == [
        ("revoke", "editor"),
        ("assign", "editor"),
    ]
    refused = viewer.call("GET", "/audit/role-assignments")
    assert refused.status_code == 403
    assert as_json(refused)["error"]["required_permission"] == "roles:assign"


def test_health_is_503_json_when_the_database_is_down(upgraded: Upgrade) -> None:
    stack = upgraded.stack
    stack.run_compose("stop", "db")
    try:
        started = time.perf_counter()
        response = requests.get(f"{stack.url}/health", timeout=10)
        assert time.perf_counter() - started < 5
        assert response.status_code == 503
        body = as_json(response)
        assert body["status"] == "unavailable" and body["database"]["reachable"] is False
        levels = [
            json.loads(line)["level"]
            for line in stack.container("app").logs(tail=20).decode().splitlines()
        ]
        assert "ERROR" in levels
    finally:
        stack.run_compose("start", "db")
        stack.wait_healthy("db")
    poll(
        lambda: requests.get(f"{stack.url}/health", timeout=5).status_code == 200,
        timeout=30,
        what="/health to recover",
    )


def test_sigterm_finishes_in_flight_requests(upgraded: Upgrade) -> None:
    stack = upgraded.stack
    stack.up("app", env={"RBAC_API_SLOW_MS": "1500"})
    admin = admin_api(stack)
    results: list[requests.Response | Exception] = []

    def slow_request() -> None:
        try:
            results.append(admin.call("GET", "/documents"))
        except Exception as exc:
            results.append(exc)

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.5)  # the request is now sleeping inside the app
    started = time.monotonic()
    stack.container("app").stop(timeout=10)
    stopped_after = time.monotonic() - started
    thread.join(timeout=10)
    assert len(results) == 1 and isinstance(results[0], requests.Response), results
    assert results[0].status_code == 200
    assert stopped_after < 6, f"the app took {stopped_after:.1f}s to stop"
    assert stack.container("app").attrs["State"]["ExitCode"] == 0
