"""deploy.toml loading: every bad configuration gives one exact line, and the good one loads."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from deploytools.config import load_config, parse_config, resolved_view
from deploytools.errors import ConfigError, ExitCode
from tests.helpers.deploy_toml import MINIMAL

REPO_ROOT = Path(__file__).resolve().parents[2]

GOOD = MINIMAL + textwrap.dedent(
    """
    [environments.production]
    docker_host = "ssh://deploy@prod.example.com"
    compose_project = "svc-production"
    base_url = "https://svc.example.com"
    requires_approval = true
    secrets = ["POSTGRES_PASSWORD"]
    """
)


def load(text: str):  # type: ignore[no-untyped-def]
    return parse_config(text, Path("deploy.toml"))


def test_the_repository_deploy_toml_is_valid() -> None:
    config = load_config(REPO_ROOT / "deploy.toml")
    assert config.project.app_service == "app"
    assert set(config.environments) == {"staging", "production"}
    assert config.environment("production").requires_approval is True
    assert config.thresholds.api_p95_ms == 200.0


def test_good_config_fills_defaults_and_names_environments() -> None:
    config = load(GOOD)
    assert config.environment("staging").name == "staging"
    assert config.environment("staging").is_local
    assert config.environment("production").docker_host == "ssh://deploy@prod.example.com"
    assert config.thresholds.health_ms == 100.0
    assert config.backups.retention == 10
    assert config.project.migration_command == ("alembic", "upgrade", "head")


def replace(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


BAD = [
    pytest.param(
        replace('app_service = "app"', 'app_servise = "app"'),
        'deploy.toml: unknown key "project.app_servise" (did you mean "app_service"?)',
        id="unknown-key-suggests",
    ),
    pytest.param(
        GOOD + "\n[thresholds]\nhealth_msec = 50\n",
        'deploy.toml: unknown key "thresholds.health_msec" (did you mean "health_ms"?)',
        id="unknown-threshold",
    ),
    pytest.param(
        GOOD + '\n[oncall]\nslack = "x"\n',
        'deploy.toml: unknown key "oncall"',
        id="unknown-table-no-suggestion",
    ),
    pytest.param(
        replace('base_url = "http://127.0.0.1:8081"', 'base_ur = "http://127.0.0.1:8081"'),
        'deploy.toml: unknown key "environments.staging.base_ur" (did you mean "base_url"?)',
        id="unknown-env-key",
    ),
    pytest.param(
        replace('name = "svc"\n', ""),
        'deploy.toml: missing required key "project.name"',
        id="missing-required",
    ),
    pytest.param(
        replace('compose_project = "svc-staging"\n', ""),
        'deploy.toml: missing required key "environments.staging.compose_project"',
        id="missing-required-in-env",
    ),
    pytest.param(
        GOOD + '\n[thresholds]\nhealth_ms = "fast"\n',
        'deploy.toml: "thresholds.health_ms" must be a number, got string "fast"',
        id="wrong-type-number",
    ),
    pytest.param(
        replace("requires_approval = true", 'requires_approval = "yes"'),
        'deploy.toml: "environments.production.requires_approval" must be true or false, '
        'got string "yes"',
        id="wrong-type-bool",
    ),
    pytest.param(
        replace('compose_files = ["docker-compose.prod.yml"]', 'compose_files = "x.yml"'),
        'deploy.toml: "project.compose_files" must be a list of strings, got string "x.yml"',
        id="wrong-type-list",
    ),
    pytest.param(
        GOOD + "\n[backups]\nretention = 2.5\n",
        'deploy.toml: "backups.retention" must be an integer, got number 2.5',
        id="wrong-type-int",
    ),
    pytest.param(
        replace('secrets = ["POSTGRES_PASSWORD"]', "secrets = [1]"),
        'deploy.toml: "environments.production.secrets[0]" must be a string, got integer 1',
        id="wrong-type-list-item",
    ),
    pytest.param(
        replace('docker_host = "ssh://deploy@prod.example.com"', 'docker_host = "prod:22"'),
        'deploy.toml: "environments.production.docker_host" must be empty (the local engine) or '
        'start with one of unix://, tcp://, ssh://, npipe://, got "prod:22"',
        id="bad-docker-host",
    ),
    pytest.param(
        replace('compose_project = "svc-staging"', 'compose_project = "Svc Staging"'),
        'deploy.toml: "environments.staging.compose_project" must be lowercase letters, digits, '
        '"-" or "_", got "Svc Staging"',
        id="bad-compose-project",
    ),
    pytest.param(
        replace('base_url = "http://127.0.0.1:8081"', 'base_url = "127.0.0.1:8081"'),
        'deploy.toml: "environments.staging.base_url" must start with http:// or https://, '
        'got "127.0.0.1:8081"',
        id="bad-base-url",
    ),
    pytest.param(
        GOOD + "\n[thresholds]\napi_p95_ms = 0\n",
        'deploy.toml: "thresholds.api_p95_ms" must be greater than 0 and at most 3600000, got 0.0',
        id="zero-threshold",
    ),
    pytest.param(
        GOOD + '\n[backups]\nstore = "s3://bucket"\n',
        'deploy.toml: "backups.store" must be "volume:NAME" (a named volume on the target engine)'
        ' or "dir:/absolute/path" (a directory on the target host), got "s3://bucket"',
        id="bad-backup-store",
    ),
    pytest.param(
        replace('secrets = ["POSTGRES_PASSWORD"]', 'secrets = ["POSTGRES PASSWORD"]'),
        'deploy.toml: "environments.production.secrets" holds names of environment variables, '
        'got "POSTGRES PASSWORD"',
        id="bad-secret-name",
    ),
    pytest.param(
        replace('compose_project = "svc-production"', 'compose_project = "svc-staging"').replace(
            'docker_host = "ssh://deploy@prod.example.com"\n', ""
        ),
        'deploy.toml: "environments.production.compose_project" is "svc-staging" on the same '
        'engine as environment "staging"; each environment needs its own',
        id="same-project-twice",
    ),
    pytest.param(
        "[project\nname=1",
        "deploy.toml: not valid TOML: Expected ']' at the end of a table declaration "
        "(at line 1, column 9)",
        id="not-toml",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_configuration_gives_one_exact_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(text)
    assert caught.value.message == expected
    assert caught.value.exit_code == ExitCode.USAGE
    assert "\n" not in caught.value.one_line()


def test_missing_file_says_where_to_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "deploy.toml")
    assert caught.value.one_line() == (
        f"configuration file {tmp_path / 'deploy.toml'} not found. Nothing was done. "
        "Run from the repository root or pass --config PATH."
    )


def test_unknown_environment_names_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        load(GOOD).environment("prod")
    assert caught.value.message == (
        'unknown environment "prod" in deploy.toml (known: production, staging)'
        ' (did you mean "production"?)'
    )


def test_resolved_view_masks_secrets() -> None:
    view = resolved_view(load(GOOD), {"POSTGRES_PASSWORD": "hunter2", "GITHUB_TOKEN": "ghp_x"})
    text = repr(view)
    assert "hunter2" not in text
    assert "ghp_x" not in text
    assert view["environments"]["production"]["secrets"] == {"POSTGRES_PASSWORD": "(set, hidden)"}
    assert view["github"]["token"] == "(set, hidden)"
    assert view["environments"]["staging"]["docker_host"] == "(local engine)"


def test_a_base_url_from_the_environment_replaces_deploy_tomls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In GitHub Actions the environment's `vars.BASE_URL`: deploy.toml's 127.0.0.1 would send
    every HTTP check of a hosted runner to the runner itself."""
    monkeypatch.setenv("DEPLOYTOOLS_PRODUCTION_BASE_URL", "https://rbac.example.com")
    monkeypatch.setenv("DEPLOYTOOLS_STAGING_BASE_URL", "")  # unset var: deploy.toml's
    config = load_config(REPO_ROOT / "deploy.toml")
    assert config.environment("production").base_url == "https://rbac.example.com"
    assert config.environment("staging").base_url == "http://127.0.0.1:8081"
    monkeypatch.setenv("DEPLOYTOOLS_PRODUCTION_BASE_URL", "rbac.example.com")
    with pytest.raises(ConfigError, match="DEPLOYTOOLS_PRODUCTION_BASE_URL"):
        load_config(REPO_ROOT / "deploy.toml")
