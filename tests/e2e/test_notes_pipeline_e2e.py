"""`deploytools pipeline run` on notes-api, the second reference service (form-encoded OAuth2
login, /healthz answering `true`, port 8000, no roles, no /metrics, its Dockerfile in docker/,
Alembic in db/), from tag v2.4.0 to production, once, green.

Staging and production (Compose projects dtn3-e2e-PID-staging and -production, behind
deploytools' own proxy on ports of 19300-19399, store volume dtn3-e2e-PID-backups) are first
deployed with 2.3.0 by `deploytools deploy` (the session's notes_images: the images the
integration module releases too), and production gets data. Then one pipeline run of v2.4.0:
release verify, the image build (the session built this tag already),
staging's deploy, smoke and validate with the example deploy.toml's own checks, the approval
(--yes), a verified backup, the expand-only migration, production's deploy (rolling, chosen by
auto from the image's lint label) and verify. What is asserted is what production serves,
the data kept, the release record (its strategy and the checks saved in it) and the report.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import notes_env
from tests.helpers.notes_env import SUPERUSER, NotesEnvironment

pytestmark = pytest.mark.e2e

PREFIX = f"dtn3-e2e-{os.getpid()}"
#: Production's notes before the release: one per kind of text it must keep as it was.
SEEDED = ("Quarterly access review", "Übersicht der Zugriffsrechte", "x" * 180)


@dataclass
class Pipeline:
    """Both environments and the deploy.toml naming them."""

    config: Path
    env: dict[str, str]
    staging: NotesEnvironment
    production: NotesEnvironment
    repo: Path
    client: Any

    def run(self, *args: str, timeout: float = 900) -> tuple[int, dict[str, Any], str]:
        done = subprocess.run(
            [sys.executable, "-m", "deploytools", "--config", str(self.config), "--json", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        try:
            return done.returncode, json.loads(done.stdout), done.stderr
        except ValueError:
            raise AssertionError(
                f"exit {done.returncode}, no JSON on stdout:\n{done.stdout}\n{done.stderr}"
            ) from None

    def url(self, environment: NotesEnvironment) -> str:
        return f"http://127.0.0.1:{environment.port}"

    def token(self, environment: NotesEnvironment) -> dict[str, str]:
        answer = requests.post(
            f"{self.url(environment)}/auth/token",
            data={"username": SUPERUSER, "password": self.env["FIRST_SUPERUSER_PASSWORD"]},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def titles(self, environment: NotesEnvironment) -> list[str]:
        listed = requests.get(
            f"{self.url(environment)}/notes", headers=self.token(environment), timeout=10
        )
        assert listed.status_code == 200, listed.text
        return [n["title"] for n in listed.json()["data"]]


@pytest.fixture(scope="module")
def pipeline(
    docker_client: Any,
    postgres_image: str,
    notes_repo: Path,
    notes_images: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    staging = NotesEnvironment("staging", f"{PREFIX}-staging", notes_env.free_port())
    production = NotesEnvironment(
        "production", f"{PREFIX}-production", notes_env.free_port(), requires_approval=True
    )
    config = tmp_path_factory.mktemp("dtn3-e2e") / "deploy.toml"
    store = f"{PREFIX}-backups"
    notes_env.write_config(
        config, [staging, production], postgres_image=postgres_image, store_volume=store
    )
    values = notes_env.secret_values(secrets.token_hex)
    env = {**os.environ, **values}
    env.pop("GITHUB_ACTIONS", None)
    env.pop("GITHUB_TOKEN", None)
    world = Pipeline(config, env, staging, production, notes_repo, docker_client)
    down = {**values, "POSTGRES_IMAGE": postgres_image}
    projects = [staging.project, production.project]
    with notes_env.removed_afterwards(docker_client, projects, down):
        try:
            # Both at once: most of a first deploy is waiting (PostgreSQL, health probes).
            argv = [sys.executable, "-m", "deploytools", "--config", str(config), "--json"]
            first = [
                subprocess.Popen(
                    [*argv, "deploy", "--env", name, "--image", notes_images["2.3.0"], "--yes"],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for name in ("staging", "production")
            ]
            for process in first:
                out, err = process.communicate(timeout=600)
                assert process.returncode == 0, f"{out}\n{err}"
            auth = world.token(production)
            for title in SEEDED:
                created = requests.post(
                    f"{world.url(production)}/notes",
                    json={"title": title, "body": "kept"},
                    headers=auth,
                    timeout=10,
                )
                assert created.status_code == 201, created.text
            yield world
        finally:
            notes_env.remove_volume(docker_client, store)


def test_pipeline_run_releases_2_4_0_to_production_rolling_with_the_data_kept(
    pipeline: Pipeline,
) -> None:
    production = pipeline.production
    before = pipeline.titles(production)
    assert before == list(SEEDED)

    code, result, stderr = pipeline.run(
        "pipeline", "run", "--tag", "v2.4.0", "--repo", str(pipeline.repo), "--yes"
    )

    assert code == 0, stderr
    body = result["result"]
    record = body["record"]
    assert record["status"] == "succeeded"
    steps = {s["name"]: s for s in record["steps"]}
    assert {n: s["status"] for n, s in steps.items()} == {
        "verify-release": "passed",
        "build-image": "passed",
        "deploy-staging": "passed",
        "smoke-staging": "passed",
        "validate-staging": "passed",
        "approve-production": "passed",
        "backup-production": "passed",
        "migrate-production": "passed",
        "deploy-production": "passed",
        "verify-production": "passed",
        "monitor-production": "skipped",
    }, stderr
    assert "rolling, expand-only" in steps["deploy-production"]["detail"]

    # What production serves: 2.4.0 (2.3.0's container is kept, drained, for the watch
    # window), through the proxy, with 2.4.0's field.
    history = pipeline.run("history", "--env", "production")[1]["result"]
    deployed = next(r for r in history["releases"] if r["id"] == record["releases"]["production"])
    kept = deployed["kept_container"]
    serving = [
        c.image.labels["org.opencontainers.image.version"]
        for c in notes_env.app_containers(pipeline.client, production.project)
        if c.id != kept
    ]
    assert serving == ["2.4.0"]
    url = pipeline.url(production)
    assert requests.get(f"{url}/healthz", timeout=5).json() is True
    tagged = requests.post(
        f"{url}/notes",
        json={"title": "after", "body": "", "tags": "release"},
        headers=pipeline.token(production),
        timeout=10,
    )
    assert tagged.status_code == 201 and tagged.json()["tags"] == "release"

    # The data: every note as it was, the schema at 2.4.0's head (the column only added).
    assert pipeline.titles(production)[: len(before)] == before
    revision = notes_env.psql(
        pipeline.client, production.project, "SELECT version_num FROM alembic_version"
    )
    assert revision == "b2e1d4c3f002"

    # The release record: the strategy auto chose and why, the checks the pipeline ran.
    assert deployed["version"] == "2.4.0" and deployed["outcome"] == "succeeded"
    assert (deployed["strategy_asked"], deployed["strategy"]) == ("auto", "rolling")
    assert deployed["strategy_reason"] == "expand-only, the proxy switches the traffic"
    assert deployed["expand_only"] is True
    assert deployed["backup_id"] == record["backup_id"]
    saved = {c["suite"]: c for c in deployed["checks"]}
    assert "verify" in saved, deployed["checks"]
    names = [c["name"] for c in saved["verify"]["results"]]
    assert saved["verify"]["verdict"] == "pass", saved["verify"]
    assert any("login works" in n for n in names) and any("database" in n for n in names)

    # The report of production's release, from the records and the evidence kept.
    report = body["report"]
    assert (report["environment"], report["version"]) == ("production", "2.4.0")
    assert report["previous_version"] == "2.3.0"
    assert report["outcome"] == "succeeded" and report["status"] == "passed"
    assert report["strategy"].startswith("rolling, expand-only")
    rows = {r["name"]: r for r in report["steps"]}
    assert rows["verify-production"]["status"] == "passed"
    assert rows["backup-production"]["status"] == "passed"
    assert rows["deploy-production"]["detail"].startswith("rolling")
    assert report["backup"]["verification_ok"] is True
    measured = {m["metric"]: m["status"] for m in report["metrics"]}
    assert measured["API Response (p95)"] == "met", measured
    assert measured["CPU Usage"] != "not measured", measured
    assert measured["Memory Usage"] != "not measured", measured
