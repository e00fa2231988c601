"""Children get the environment they need and no more: the allow-list, the engine's connection
for what talks to the engine, and what the caller names; never the runner's other secrets."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from deploytools.config import load_config
from deploytools.engine import compose, git, process
from deploytools.target import Target

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "planted-secret-value-7f3a"
RUNNER_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/ci",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TMPDIR": "/tmp",
    "DOCKER_HOST": "unix:///run/docker.sock",
    "DOCKER_CERT_PATH": "/certs",
    "SSH_AUTH_SOCK": "/run/agent.sock",
    "GITHUB_TOKEN": SECRET,
    "GH_TOKEN": SECRET,
    "AWS_ACCESS_KEY_ID": SECRET,
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "DEPLOYTOOLS_BACKUP_KEY": SECRET,
    "POSTGRES_PASSWORD": "db-password-for-compose",
    "APP_SECRET_KEY": "signing-key-for-compose",
    "UNRELATED": "x",
}


def test_a_plain_child_gets_the_allow_list_only() -> None:
    env = process.child_env(parent=RUNNER_ENV)
    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/ci",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/tmp",
    }


def test_an_engine_child_also_gets_the_connection_and_the_ssh_agent() -> None:
    env = process.child_env(engine=True, parent=RUNNER_ENV)
    assert env["DOCKER_HOST"] == "unix:///run/docker.sock"
    assert env["DOCKER_CERT_PATH"] == "/certs" and env["SSH_AUTH_SOCK"] == "/run/agent.sock"
    assert SECRET not in env.values() and "UNRELATED" not in env


def test_what_the_caller_names_is_passed_and_wins() -> None:
    env = process.child_env({"PATH": "/opt/bin", "GITHUB_TOKEN": "given"}, parent=RUNNER_ENV)
    assert env["PATH"] == "/opt/bin" and env["GITHUB_TOKEN"] == "given"


def test_compose_gets_the_stacks_variables_and_named_secrets_only() -> None:
    env = compose.compose_env(
        "ssh://deploy@prod",
        {"APP_PORT": "8080"},
        {"APP_IMAGE": "rbac:2"},
        passed=["POSTGRES_PASSWORD", "APP_SECRET_KEY", "NOT_SET_ANYWHERE"],
        parent=RUNNER_ENV,
    )
    assert env["DOCKER_HOST"] == "ssh://deploy@prod"
    assert env["APP_PORT"] == "8080" and env["APP_IMAGE"] == "rbac:2"
    assert env["POSTGRES_PASSWORD"] == "db-password-for-compose"
    assert env["APP_SECRET_KEY"] == "signing-key-for-compose"
    assert "NOT_SET_ANYWHERE" not in env and "UNRELATED" not in env
    assert SECRET not in env.values()
    assert not [k for k in env if k.startswith(("AWS_", "GITHUB_", "GH_"))]


def test_a_targets_compose_child_gets_what_deploy_toml_and_the_compose_file_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in RUNNER_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PROXY_IMAGE", "haproxy:local")  # interpolated by the Compose file
    target = Target.for_environment(load_config(REPO_ROOT / "deploy.toml"), "production")
    env = target.compose_env({"APP_IMAGE": "rbac:2"})
    assert env["APP_PORT"] == "8080"  # the environment's variables
    assert env["POSTGRES_PASSWORD"] == "db-password-for-compose"  # its named secrets
    assert env["PROXY_IMAGE"] == "haproxy:local"  # a variable the Compose file uses
    assert env["APP_IMAGE"] == "rbac:2"
    assert SECRET not in env.values() and "UNRELATED" not in env


def test_the_variables_a_compose_file_interpolates(tmp_path: Path) -> None:
    file = tmp_path / "compose.yml"
    file.write_text(
        "services:\n  app:\n    image: ${APP_IMAGE:-x}\n    command: echo $$HOME $PORT\n"
        "    environment:\n      KEY: ${APP_SECRET_KEY:?set it}\n"
    )
    assert compose.referenced_variables([file, tmp_path / "missing.yml"]) == {
        "APP_IMAGE",
        "PORT",
        "APP_SECRET_KEY",
    }


def test_git_gets_its_own_variables_and_never_prompts() -> None:
    env = git.git_env({**RUNNER_ENV, "GIT_AUTHOR_NAME": "a", "GNUPGHOME": "/g"})
    assert env["GIT_AUTHOR_NAME"] == "a" and env["GNUPGHOME"] == "/g"
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["LC_ALL"] == "C"
    assert SECRET not in env.values() and "DOCKER_HOST" not in env


def test_a_real_child_sees_exactly_the_environment_it_was_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)
    probe = "import os, json; print(json.dumps(sorted(os.environ)))"
    done = process.run(
        [sys.executable, "-c", probe], env=process.child_env({"ONLY_THIS": "1"}), timeout=30
    )
    names = set(json.loads(done.stdout))
    assert "GITHUB_TOKEN" not in names and "ONLY_THIS" in names


def test_a_failed_compose_call_shows_no_secret_and_runs_with_the_allow_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deploytools.commands import compose as compose_cmd
    from deploytools.errors import ExternalCommandFailed

    for name, value in RUNNER_ENV.items():
        monkeypatch.setenv(name, value)
    seen: dict[str, str] = {}

    def runner(
        argv: Sequence[str], *, env: Mapping[str, str], timeout: float, cwd: str | None = None
    ) -> process.ProcessResult:
        seen.update(env)
        said = f"invalid password db-password-for-compose for {env['APP_SECRET_KEY']}"
        return process.ProcessResult(tuple(argv), 1, "", said)

    monkeypatch.setattr(
        "deploytools.target.detect_compose",
        lambda host: compose_cmd.ComposeCli(prefix=("docker-compose",), version="1.29.2"),
    )
    config = load_config(REPO_ROOT / "deploy.toml")
    target = Target.for_environment(config, "production", runner=runner)
    with pytest.raises(ExternalCommandFailed) as caught:
        target.compose(compose_cmd.config, what="checking the Compose files")
    shown = json.dumps([caught.value.message, caught.value.facts])
    assert "db-password-for-compose" not in shown and "signing-key-for-compose" not in shown
    assert "***" in caught.value.message
    assert seen["POSTGRES_PASSWORD"] == "db-password-for-compose"  # the child had it
    assert SECRET not in seen.values() and "UNRELATED" not in seen
