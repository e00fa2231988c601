"""The second reference service, notes-api, released through the CLI: both releases built from
their tags with [image] (docker/Dockerfile, the runtime stage, a build arg), then on one stack of
its own: the first deploy, a verified backup, the expand-only migration run while 2.3.0 serves,
the deploy of 2.4.0 (rolling, chosen by `--strategy auto` from the image's lint label, behind
deploytools' own proxy) and a rollback to 2.3.0 in the watch window, both under an open-model
load with no failed request, with real HTTP against the app each time. smoke, validate and
verify run the example deploy.toml's checks (docs/checks.md's example): the form-encoded login,
a test user created by the superuser, RBAC, the flow, the revision read from alembic_version.

One module, one stack and one build of each image (Compose project dtnotes-PID, its proxy
container dtnotes-PID-deploytools-proxy, store volume dtnotes-PID-backups, image repository
dtnotes/notes-api), removed at the end, failures included.
The tests run in file order: each starts where the previous left the stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result

from deploytools.cli import cli
from tests.helpers import notes_env
from tests.helpers.load import LoadProcess, failures
from tests.helpers.notes_env import IMAGE_REPOSITORY, SERVICE, SUPERUSER
from tests.helpers.stacks import free_port, wait_until

pytestmark = pytest.mark.integration

# The example's production environment (its checks' writer has secret names of its own there),
# with this module's project, port and store.
ENV = "production"
EXPAND_ONLY = "deploytools.migrations.expand-only"
#: The open-model load through the proxy while 2.4.0 rolls in and back out (requests/s).
LOAD_RATE = 50.0


@dataclass
class Notes:
    """The module's stack: its deploy.toml, secrets, release repository and images."""

    config: Path
    secrets: dict[str, str]
    url: str
    project: str
    repo: Path
    images: dict[str, str]
    client: Any

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(
            cli,
            ["--config", str(self.config), "--json", *args],
            env=self.secrets,
            catch_exceptions=False,
        )

    def ok(self, *args: str) -> dict[str, Any]:
        result = self.cli(*args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["result"]  # type: ignore[no-any-return]

    def token(self, email: str = SUPERUSER, password: str | None = None) -> str:
        answer = requests.post(
            f"{self.url}/auth/token",
            data={
                "username": email,
                "password": password or self.secrets["FIRST_SUPERUSER_PASSWORD"],
            },
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["token_type"] == "bearer"
        return str(body["access_token"])

    def app_containers(self) -> list[Any]:
        return self.client.containers.list(  # type: ignore[no-any-return]
            filters={"label": [f"com.docker.compose.project={self.project}",
                               "com.docker.compose.service=api"]}
        )  # fmt: skip

    def serving_version(self, kept: str | None = None) -> str:
        """The version of the one app container serving; `kept`: the id of the previous
        release's container a rolling deploy keeps (drained) in its watch window."""
        containers = [c for c in self.app_containers() if c.id != kept]
        assert len(containers) == 1, [c.name for c in containers]
        return str(containers[0].image.labels["org.opencontainers.image.version"])

    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def sql(self, query: str) -> str:
        containers = self.client.containers.list(
            filters={"label": [f"com.docker.compose.project={self.project}",
                               "com.docker.compose.service=postgres"]}
        )  # fmt: skip
        code, output = containers[0].exec_run(["psql", "-U", "notes", "-d", "notes", "-tAc", query])
        assert code == 0, output
        return output.decode().strip()


@pytest.fixture(scope="module")
def notes(
    docker_client: Any,
    postgres_image: str,
    notes_repo: Path,
    notes_images: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Notes]:
    tmp = tmp_path_factory.mktemp("dtnotes")
    project = f"dtnotes-{os.getpid()}"
    port = free_port()
    notes_env.write_config(
        tmp / "deploy.toml",
        [notes_env.NotesEnvironment(ENV, project, port)],
        postgres_image=postgres_image,
        store_volume=f"{project}-backups",
    )
    values = notes_env.secret_values(secrets.token_hex)
    env = Notes(
        tmp / "deploy.toml",
        values,
        f"http://127.0.0.1:{port}",
        project,
        notes_repo,
        dict(notes_images),
        docker_client,
    )
    with notes_env.removed_afterwards(
        docker_client, [project], {**values, "POSTGRES_IMAGE": postgres_image}
    ):
        yield env


def test_release_verify_passes_with_alembic_in_db_leaving_the_lint_to_image_build(
    notes_repo: Path,
) -> None:
    config = notes_repo / "deploy.toml"
    result = CliRunner().invoke(
        cli,
        ["--config", str(config), "--json", "release", "verify", "--tag", "v2.4.0",
         "--repo", str(notes_repo)],
        env={"GITHUB_TOKEN": ""},
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["result"]["checks"]}
    assert checks["alembic-single-head"]["verdict"] == "passed"
    assert "b2e1d4c3f002" in checks["alembic-single-head"]["reason"]
    # The lint runs in the release's image, which `image build` makes (and labels from it):
    # from 2.3.0's head, not from an empty database.
    lint = checks["migration-lint"]
    if json.loads(result.stdout)["result"]["migration_lint_at"] == "build":
        # No image of v2.4.0 on this engine yet: the lint is announced for the build, which
        # labels the image (the next test reads the verdict there).
        assert lint["verdict"] == "skipped", lint
        assert "runs at the build step" in lint["reason"], lint
        assert "a1f0c3d2e001" in lint["reason"], lint
    else:
        assert lint["verdict"] == "passed", lint
        assert "expand-only" in lint["reason"], lint


def test_both_releases_build_the_runtime_stage_of_docker_dockerfile(notes: Notes) -> None:
    for version, image_id in notes.images.items():
        image = notes.client.images.get(image_id)
        assert f"{IMAGE_REPOSITORY}:{version}" in image.tags
        assert image.labels["org.opencontainers.image.version"] == version
        assert image.labels["org.opencontainers.image.title"] == "notes-api"
        # Labelled by image build from the migration lint it ran in the image (the release's
        # Dockerfile writes no such label): 2.4.0's migration since 2.3.0's head only expands.
        assert image.labels.get(EXPAND_ONLY) in ("true", "false")
        if version == "2.4.0":
            assert image.labels[EXPAND_ONLY] == "true"
            assert image.labels["deploytools.migrations.from"] == "a1f0c3d2e001"
            assert image.labels["deploytools.migrations.heads"] == "b2e1d4c3f002"
        config = image.attrs["Config"]
        # The runtime stage, not the builder: its own user and directory, the build arg applied.
        assert config["User"] == "notes"
        assert config["WorkingDir"] == "/srv/notes"
        assert "WEB_CONCURRENCY=2" in config["Env"]
        assert f"NOTES_VERSION={version}" in config["Env"]


def test_the_first_deploy_serves_2_3_0(notes: Notes) -> None:
    record = notes.ok("deploy", "--env", ENV, "--image", notes.images["2.3.0"])["record"]
    assert record["outcome"] == "succeeded"
    assert record["version"] == "2.3.0"
    # Nothing served before: nothing to switch from, nothing stopped (the record says so).
    assert (record["strategy_asked"], record["strategy"]) == ("auto", "recreate")
    assert record["strategy_reason"].startswith("nothing serves there yet"), record
    assert notes.serving_version() == "2.3.0"
    health = requests.get(f"{notes.url}/healthz", timeout=5)
    assert health.status_code == 200 and health.json() is True
    # The login is a form: a JSON body is refused.
    refused = requests.post(f"{notes.url}/auth/token", json={"username": SUPERUSER}, timeout=5)
    assert refused.status_code == 422
    auth = {"Authorization": f"Bearer {notes.token()}"}
    created = requests.post(
        f"{notes.url}/notes", json={"title": "first", "body": "kept"}, headers=auth, timeout=5
    )
    assert created.status_code == 201, created.text
    user = requests.post(
        f"{notes.url}/users",
        json={"email": "reader@notes.example.com", "password": "reader-password"},
        headers=auth,
        timeout=5,
    )
    assert user.status_code == 201, user.text
    reader = notes.token("reader@notes.example.com", "reader-password")
    forbidden = requests.post(
        f"{notes.url}/users",
        json={"email": "x@notes.example.com", "password": "x-password"},
        headers={"Authorization": f"Bearer {reader}"},
        timeout=5,
    )
    assert forbidden.status_code == 403
    assert requests.get(f"{notes.url}/notes", timeout=5).status_code == 401


#: Parts of the names of checks of the example's [checks] each suite must have run and passed.
SUITE_CHECKS = {
    "smoke": {"health", "login works", "wrong password refused", "no token refused",
              "rbac: writer", "GET /notes -> 200", "POST /users -> 403"},
    "validate": {"health", "writer writes a note", "database migrated", "flow: superuser creates",
                 "flow: new user may not create users", "api p95", "logs: no errors"},
    "verify": {"health", "login works", "database migrated", "api p95", "logs: no errors"},
}  # fmt: skip


def _suite_passes(notes: Notes, command: str) -> dict[str, str]:
    """Run `command`; every check's verdict by name, after asserting they all passed."""
    result = notes.ok(command, "--env", ENV)
    verdicts = {c["name"]: c["verdict"] for c in result["results"]}
    failed = {c["name"]: c for c in result["results"] if c["verdict"] != "pass"}
    assert not failed, failed
    # verify also samples the app container's CPU and memory (the report's metrics rows).
    usage = {name for name in verdicts if name.startswith(("cpu ", "memory "))}
    assert bool(usage) == (command == "verify")
    return verdicts


@pytest.mark.parametrize("command", ["smoke", "validate", "verify"])
def test_the_checks_of_its_deploy_toml_pass_on_2_3_0(notes: Notes, command: str) -> None:
    verdicts = _suite_passes(notes, command)
    names = " | ".join(verdicts)
    for wanted in SUITE_CHECKS[command]:
        assert any(wanted in name for name in verdicts), (wanted, names)


def test_a_backup_is_taken_and_verified(notes: Notes) -> None:
    created = notes.ok("backup", "create", "--env", ENV)
    verification = created["verification"]
    assert verification["ok"] and verification["restore_ok"] and verification["row_counts_ok"]
    backup_id = created["manifest"]["id"]
    listing = notes.ok("backup", "list", "--env", ENV)
    assert backup_id in json.dumps(listing)


def test_the_expand_only_migration_runs_while_2_3_0_serves(notes: Notes) -> None:
    before = notes.sql("SELECT version_num FROM alembic_version")
    assert before == "a1f0c3d2e001"
    notes.ok("migrate", "--env", ENV, "--image", notes.images["2.4.0"])
    assert notes.sql("SELECT version_num FROM alembic_version") == "b2e1d4c3f002"
    assert (
        notes.sql(
            "SELECT is_nullable FROM information_schema.columns "
            "WHERE table_name = 'note' AND column_name = 'tags'"
        )
        == "YES"
    )
    # 2.3.0 still serves on the expanded schema: it reads and writes notes without the column.
    assert notes.serving_version() == "2.3.0"
    auth = {"Authorization": f"Bearer {notes.token()}"}
    written = requests.post(
        f"{notes.url}/notes", json={"title": "on 2.3.0", "body": ""}, headers=auth, timeout=5
    )
    assert written.status_code == 201 and "tags" not in written.json()


def test_2_4_0_deploys_and_rolls_back_to_2_3_0_keeping_the_data(notes: Notes) -> None:
    # The default strategy (auto): the image's lint label says expand-only and deploytools'
    # proxy fronts the app (it only exposes its port), so 2.4.0 rolls in.
    with LoadProcess(notes.port(), rate_per_s=LOAD_RATE, path="/healthz") as load:
        deployed = notes.cli("deploy", "--env", ENV, "--image", notes.images["2.4.0"])
        samples = load.stop()
    assert deployed.exit_code == 0, deployed.output
    record = json.loads(deployed.stdout)["result"]["record"]
    assert record["outcome"] == "succeeded" and record["version"] == "2.4.0"
    assert (record["strategy_asked"], record["strategy"]) == ("auto", "rolling")
    assert len(samples) >= 50 and failures(samples) == []
    # In the watch window 2.3.0's container stays up, drained: 2.4.0 alone takes the traffic.
    kept = record["kept_container"]
    assert kept and notes.client.containers.get(kept).status == "running"
    assert notes.serving_version(kept=kept) == "2.4.0"
    # The checks on 2.4.0, the previous release's container still beside it.
    _suite_passes(notes, "verify")
    auth = {"Authorization": f"Bearer {notes.token()}"}
    tagged = requests.post(
        f"{notes.url}/notes",
        json={"title": "tagged", "body": "", "tags": "release"},
        headers=auth,
        timeout=5,
    )
    assert tagged.status_code == 201 and tagged.json()["tags"] == "release"

    # In the watch window the rollback is a switch back to the kept 2.3.0 container.
    with LoadProcess(notes.port(), rate_per_s=LOAD_RATE, path="/healthz") as load:
        rolled_back = notes.cli("rollback", "--env", ENV)
        samples = load.stop()
    assert rolled_back.exit_code == 0, rolled_back.output
    rolled = json.loads(rolled_back.stdout)["result"]
    assert len(samples) >= 25 and failures(samples) == []
    assert "2.3.0" in json.dumps(rolled)
    assert '"watch_window_rollback": true' in json.dumps(rolled)
    assert [c.id for c in notes.app_containers()] == [kept]
    wait_until(lambda: notes.serving_version() == "2.3.0", timeout=60, what="2.3.0 serving")
    wait_until(
        lambda: requests.get(f"{notes.url}/healthz", timeout=2).json() is True,
        timeout=60,
        what="healthz after the rollback",
    )
    listed = requests.get(f"{notes.url}/notes", headers=auth, timeout=5).json()
    # The data stays: the rollback kept the database (the migration only expanded it).
    assert [n["title"] for n in listed["data"]] == ["first", "on 2.3.0", "tagged"]
    assert notes.sql("SELECT version_num FROM alembic_version") == "b2e1d4c3f002"
    history = notes.ok("history", "--env", ENV)
    assert "rollback" in json.dumps(history)


def test_init_on_a_copy_of_the_project_writes_a_config_that_deploys_it(
    notes: Notes, postgres_image: str, tmp_path: Path
) -> None:
    """The team's Compose project (this machine's defaults: a free port, the local PostgreSQL
    image), `deploytools init`, the secrets exported: the written deploy.toml deploys it."""
    root = tmp_path / f"dtnotes-init-{os.getpid()}"
    shutil.copytree(SERVICE, root, ignore=shutil.ignore_patterns("deploy.toml", "releases"))
    port = free_port()
    compose = root / "docker-compose.yml"
    compose.write_text(compose.read_text().replace("postgres:16", postgres_image))
    done = CliRunner().invoke(cli, ["--json", "init", "--dir", str(root), "--no-workflows"])
    assert done.exit_code == 0, done.output
    # What init lists for a person to fill in: staging's base URL (where the proxy publishes).
    written = root / "deploy.toml"
    written.write_text(
        written.read_text().replace("http://127.0.0.1:8180", f"http://127.0.0.1:{port}")
    )
    project = f"{root.name}-staging"
    try:
        deployed = CliRunner().invoke(
            cli,
            ["--config", str(root / "deploy.toml"), "--json", "deploy", "--env", "staging",
             "--image", notes.images["2.3.0"]],
            env=notes.secrets,
            catch_exceptions=False,
        )  # fmt: skip
        assert deployed.exit_code == 0, deployed.output
        assert json.loads(deployed.stdout)["result"]["record"]["outcome"] == "succeeded"
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json() is True
        token = requests.post(
            f"http://127.0.0.1:{port}/auth/token",
            # FIRST_SUPERUSER is exported too (a variable the Compose file interpolates).
            data={"username": SUPERUSER,
                  "password": notes.secrets["FIRST_SUPERUSER_PASSWORD"]},
            timeout=10,
        )  # fmt: skip
        assert token.status_code == 200, token.text
    finally:
        notes_env.remove_project(
            notes.client, project, {**notes.secrets, "POSTGRES_IMAGE": postgres_image}
        )
        with contextlib.suppress(Exception):
            notes.client.volumes.get(f"{root.name}-backups").remove(force=True)
        # The deploy's keep tag, under the repository init read from the Compose file.
        for image in notes.client.images.list(name="ghcr.io/example/notes-api"):
            for tag in image.tags:
                if tag.startswith("ghcr.io/example/notes-api:staging-release-"):
                    with contextlib.suppress(Exception):
                        notes.client.images.remove(tag)
