"""`deploytools init` on copies of both reference services' Compose projects: the deploy.toml it
writes passes `config check`, it finds what each project has, and it never overwrites."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploytools.cli import cli
from deploytools.config import load_config
from deploytools.steps.adopt import WORKFLOWS

REPO = Path(__file__).resolve().parents[2]


def _copy_notes(tmp_path: Path) -> Path:
    root = tmp_path / "notes-api"
    shutil.copytree(REPO / "examples" / "notes-api", root)
    (root / "deploy.toml").unlink()
    return root


def _copy_rbac(tmp_path: Path) -> Path:
    root = tmp_path / "rbac-api"
    shutil.copytree(REPO / "examples" / "rbac-api", root)
    shutil.copy(REPO / "docker-compose.prod.yml", root)
    return root


def init(root: Path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--json", "init", "--dir", str(root), *args])


def config_check(root: Path):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--config", str(root / "deploy.toml"), "config", "check"])


def test_init_on_the_notes_project_writes_a_config_that_passes_config_check(
    tmp_path: Path,
) -> None:
    root = _copy_notes(tmp_path)
    done = init(root)
    assert done.exit_code == 0, done.output
    assert config_check(root).exit_code == 0
    config = load_config(root / "deploy.toml")
    assert config.project.app_service == "api"
    assert config.project.database_service == "postgres"
    assert config.project.compose_files == ("docker-compose.yml",)
    assert config.project.image_repository == "ghcr.io/example/notes-api"
    assert config.project.migration_command == (
        "alembic", "-c", "/srv/notes/db/alembic.ini", "upgrade", "head",
    )  # fmt: skip
    assert config.release.alembic_ini == "db/alembic.ini"
    assert config.deploy.image_variable == "NOTES_IMAGE"
    assert (config.image.dockerfile, config.image.target) == ("docker/Dockerfile", "runtime")
    assert set(config.environments) == {"staging", "production"}
    assert config.environments["production"].requires_approval
    # The app only exposes 8000: deploytools' proxy publishes the base_url's port.
    assert config.environments["production"].base_url == "http://127.0.0.1:8080"
    assert set(config.environments["staging"].secrets) == {
        "DB_PASSWORD", "SECRET_KEY", "FIRST_SUPERUSER_PASSWORD",
    }  # fmt: skip
    assert [p.path for p in config.checks.probes] == ["/healthz"]
    result = json.loads(done.output)["result"]
    assert result["written"] == ["deploy.toml", *(f".github/workflows/{w}" for w in WORKFLOWS)]
    to_fill = " ".join(result["to_fill"])
    for needed in ("DB_PASSWORD", "base_url", "checks' users", "github.repository"):
        assert needed in to_fill
    for workflow in WORKFLOWS:
        written = (root / ".github" / "workflows" / workflow).read_text()
        assert written == (REPO / ".github" / "workflows" / workflow).read_text()


def test_init_on_the_rbac_project_finds_the_port_behind_its_proxy(tmp_path: Path) -> None:
    root = _copy_rbac(tmp_path)
    assert init(root, "--no-workflows").exit_code == 0
    assert config_check(root).exit_code == 0
    config = load_config(root / "deploy.toml")
    assert (config.project.app_service, config.project.database_service) == ("app", "db")
    assert config.project.migration_command[:3] == ("alembic", "-c", "/app/alembic.ini")
    assert config.image.dockerfile == "Dockerfile"
    assert config.image.target == ""
    assert dict(config.environments["production"].variables) == {"APP_PORT": "8080"}
    assert config.environments["production"].base_url == "http://127.0.0.1:8080"
    assert set(config.environments["production"].secrets) == {
        "POSTGRES_PASSWORD",
        "APP_SECRET_KEY",
    }
    assert [p.path for p in config.checks.probes] == ["/health"]
    assert not (root / ".github").exists()


def test_init_refuses_to_overwrite_and_touches_nothing(tmp_path: Path) -> None:
    root = _copy_notes(tmp_path)
    (root / ".github" / "workflows").mkdir(parents=True)
    (root / ".github" / "workflows" / "release.yml").write_text("mine\n")
    done = CliRunner().invoke(cli, ["init", "--dir", str(root)])
    assert done.exit_code == 2
    assert ".github/workflows/release.yml" in done.output
    assert "Nothing was written" in done.output
    assert not (root / "deploy.toml").exists()
    assert (root / ".github" / "workflows" / "release.yml").read_text() == "mine\n"
    assert sorted(p.name for p in (root / ".github" / "workflows").iterdir()) == ["release.yml"]


def test_init_without_a_compose_file_is_a_usage_error(tmp_path: Path) -> None:
    done = CliRunner().invoke(cli, ["init", "--dir", str(tmp_path)])
    assert done.exit_code == 2
    assert "no Compose file" in done.output
    assert list(tmp_path.iterdir()) == []


def test_init_asks_which_service_when_it_cannot_tell(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        "services:\n"
        "  db: {image: postgres:16}\n"
        "  web: {image: 'example/web:1'}\n"
        "  worker: {image: 'example/worker:1'}\n"
    )
    done = CliRunner().invoke(cli, ["init", "--dir", str(tmp_path), "--no-workflows"])
    assert done.exit_code == 2
    assert "--app-service" in done.output
    assert not (tmp_path / "deploy.toml").exists()
    chosen = init(tmp_path, "--no-workflows", "--app-service", "web")
    assert chosen.exit_code == 0, chosen.output
    config = load_config(tmp_path / "deploy.toml")
    assert config.project.app_service == "web"
    # The image is not a variable: deploys could not set it, and the list says so.
    assert config.deploy.image_variable == "APP_IMAGE"
    assert "not a Compose variable" in " ".join(json.loads(chosen.output)["result"]["to_fill"])


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('"${WEB_PORT:-8000}:8000"', ("WEB_PORT", 8000, 8000)),
        ('"127.0.0.1:9000:8000"', ("", 9000, 8000)),
        ("{target: 8000, published: 8001}", ("", 8001, 8000)),
    ],
)
def test_published_ports_are_read_in_every_compose_form(
    tmp_path: Path, entry: str, expected: tuple[str, int, int]
) -> None:
    from deploytools.steps.adopt_compose import find_port, read_compose

    (tmp_path / "compose.yaml").write_text(f"services:\n  web:\n    ports: [{entry}]\n")
    port = find_port(read_compose(tmp_path / "compose.yaml")["services"], "web")
    assert port is not None
    assert (port.variable, port.published, port.container) == expected


def test_the_migration_command_follows_the_final_stage_workdir(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        "services:\n"
        "  database: {image: 'postgis/postgis:16-3.4'}\n"
        "  web:\n"
        "    image: ${WEB_IMAGE:-registry.example.com/team/web:1}\n"
        "    ports: ['${WEB_PORT:-9000}:9000']\n"
        "    environment: {DB_PASSWORD: '${DB_PASSWORD:?required}'}\n"
        "  cache: {image: 'redis:7'}\n"
    )
    (tmp_path / "app" / "migrations").mkdir(parents=True)
    (tmp_path / "app" / "migrations" / "alembic.ini").write_text("[alembic]\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM python:3.12 AS build\nWORKDIR /build\n"
        "FROM python:3.12-slim AS final\nWORKDIR /opt\nWORKDIR web\n"
    )
    done = init(tmp_path, "--no-workflows")
    assert done.exit_code == 0, done.output
    config = load_config(tmp_path / "deploy.toml")
    assert (config.project.app_service, config.project.database_service) == ("web", "database")
    assert config.project.migration_command == (
        "alembic", "-c", "/opt/web/app/migrations/alembic.ini", "upgrade", "head",
    )  # fmt: skip
    assert config.release.alembic_ini == "app/migrations/alembic.ini"
    assert (config.image.dockerfile, config.image.target) == ("Dockerfile", "final")
    assert config.project.image_repository == "registry.example.com/team/web"
    assert config.deploy.image_variable == "WEB_IMAGE"
    assert config.environments["staging"].secrets == ("DB_PASSWORD",)
    assert config.environments["staging"].base_url == "http://127.0.0.1:9100"
    # No healthcheck: no health probe, and the list says so.
    assert config.checks.probes == ()
    assert "no HTTP healthcheck" in " ".join(json.loads(done.output)["result"]["to_fill"])
