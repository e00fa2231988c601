"""`deploytools report` on the real engine: the recorded release stored in a real backup store
(a named volume, read through the helper container), rendered by the CLI like the golden file.

Docker names carry the prefix dtrep-; the store volume is removed at the end, failures included.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.session import open_environment
from deploytools.store.records import BackupManifest, ReleaseRecord, Verification
from tests.helpers.shared_stack import _remove_volume

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
GOLDEN = REPO_ROOT / "tests" / "unit" / "golden"
RECORDED = json.loads((GOLDEN / "recorded-release-v1.15.2.json").read_text())


@pytest.fixture(scope="module")
def store_volume() -> Iterator[str]:
    name = f"dtrep-store-{secrets.token_hex(3)}"
    yield name
    client = docker.from_env()
    try:
        _remove_volume(client, name)  # with the store's kept helper, which mounts it
    finally:
        client.close()


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, store_volume: str) -> Path:
    """The repository's deploy.toml (same checks, same thresholds) on dtrep- projects and store."""
    text = (REPO_ROOT / "deploy.toml").read_text()
    text = text.replace('compose_project = "rbac-staging"', 'compose_project = "dtrep-staging"')
    text = text.replace(
        'compose_project = "rbac-production"', 'compose_project = "dtrep-production"'
    )
    text = re.sub(r'^store = ".*"$', f'store = "volume:{store_volume}"', text, flags=re.M)
    text = text.replace('compose_files = ["docker-compose.prod.yml"]', 'compose_files = ["'
                        + str(REPO_ROOT / "docker-compose.prod.yml") + '"]')  # fmt: skip
    path = tmp_path_factory.mktemp("dtrep") / "deploy.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def recorded(config_file: Path) -> Path:
    """The recorded release written into the real store, as deploy and backup write it."""
    ctx = StepContext(config=load_config(config_file))
    with open_environment(ctx, "production") as session:
        history = session.history
        for record in RECORDED["records"]:
            history.save_release(ReleaseRecord(**record))
        history.save_manifest(BackupManifest(**RECORDED["manifest"]))
        history.save_verification(Verification(**RECORDED["verification"]))
    with open_environment(ctx, "staging") as session:
        session.history.save_release(ReleaseRecord(**RECORDED["staging_record"]))
    results = config_file.parent / "results"
    results.mkdir(exist_ok=True)
    for name, data in RECORDED["results"].items():
        (results / name).write_text(json.dumps(data))
    return results


def deploytools(config_file: Path, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "deploytools", "--config", str(config_file), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_report_renders_the_stored_release_like_the_golden_file(
    config_file: Path, recorded: Path, store_volume: str, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
    result = deploytools(
        config_file, "report", "--env", "production", "--results", str(recorded), env=env
    )
    assert result.returncode == 0, result.stderr
    golden = (GOLDEN / "report-v1.15.2.md").read_text()
    assert result.stdout == golden.replace("rbac-api-backups", store_volume)
    assert summary.read_text() == result.stdout + "\n"


def test_report_json_and_unknown_release(config_file: Path, recorded: Path) -> None:
    result = deploytools(config_file, "report", "--env", "production", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["record_id"] == "0008"
    assert data["backup"]["sha256"] == RECORDED["manifest"]["sha256"]
    assert data["rollback_command"] == "deploytools rollback --env production --to 1.15.1"
    # Without the checks' results the metrics say so, never TBD.
    assert {m["measured"] for m in data["metrics"]} == {"not measured"}
    missing = deploytools(config_file, "report", "--env", "production", "--release", "42")
    assert missing.returncode == 2
    assert "no release 42 in environment production" in missing.stderr
