"""The CLI under hostile input: `--json` is one JSON object whatever goes wrong, and a secret
planted wherever it could leak from (the environment, a URL, Compose's output, an exception)
appears in no output."""

from __future__ import annotations

import dataclasses
import json
import socket
import textwrap
import types
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from deploytools.cli import cli
from deploytools.cli.app import AppState
from deploytools.config import load_config
from deploytools.errors import ExternalCommandFailed
from tests.helpers.deploy_toml import PROJECT

REPO_ROOT = Path(__file__).resolve().parents[2]
REPO_CONFIG = str(REPO_ROOT / "deploy.toml")


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def one_json_object(result: Result) -> dict[str, object]:
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--config", REPO_CONFIG, "--json", "release", "verify"], id="missing-tag"),
        pytest.param(["--json", "status", "--env", "staging", "--bogus"], id="unknown-option"),
        pytest.param(["--json", "--bogus", "config", "check"], id="unknown-global-option"),
        pytest.param(["--json", "no-such-command"], id="unknown-command"),
        pytest.param(["--json", "deploy", "--env", "staging"], id="missing-image"),
        pytest.param(["--json", "monitor", "--env", "x", "--duration", "soon"], id="bad-value"),
    ],
)
def test_json_wraps_usage_errors(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    data = one_json_object(result)
    assert data["ok"] is False
    error = data["error"]
    assert isinstance(error, dict)
    assert error["exit_code"] == 2
    assert error["type"] == "UsageError"
    assert error["message"]
    # Still said to a person, once, on stderr.
    assert "Error:" in result.stderr or "error:" in result.stderr


def test_json_wraps_a_config_path_naming_a_directory(tmp_path: Path) -> None:
    result = invoke("--json", "--config", str(tmp_path), "config", "check")
    assert result.exit_code == 2
    data = one_json_object(result)
    assert data["ok"] is False


def test_usage_errors_without_json_print_nothing_on_stdout() -> None:
    result = invoke("release", "verify")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Missing option '--tag'" in result.stderr


SECRET = "PlantedS3cret-7d1f2a9c"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


CHECKED = PROJECT + textwrap.dedent(
    """
    [environments.staging]
    compose_project = "svc-staging"
    base_url = "http://127.0.0.1:PORT"
    secrets = ["POSTGRES_PASSWORD"]

    [checks.users.admin]
    username_env = "ADMIN_USERNAME"
    password_env = "ADMIN_PASSWORD"

    [[checks.probes]]
    name = "me"
    path = "/me"
    user = "admin"
    suites = ["smoke"]
    """
)

PLANTED_ENV = {
    "POSTGRES_PASSWORD": SECRET,
    "ADMIN_USERNAME": "admin",
    "ADMIN_PASSWORD": SECRET,
    "GITHUB_TOKEN": SECRET,
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "GITHUB_ACTIONS": "true",
}


def outputs(result: Result) -> str:
    """All the output, but for the workflow commands that tell GitHub's runner what to mask (the
    runner consumes them; they never reach the log)."""
    lines = (result.stdout + result.stderr).splitlines()
    return "\n".join(line for line in lines if not line.startswith("::add-mask::"))


@pytest.fixture
def checked_config(tmp_path: Path) -> Path:
    path = tmp_path / "deploy.toml"
    path.write_text(CHECKED.replace("PORT", str(free_port())))
    return path


@pytest.mark.parametrize("as_json", [[], ["--json"]], ids=["text", "json"])
def test_planted_secret_config_check(as_json: list[str]) -> None:
    result = invoke("--config", REPO_CONFIG, *as_json, "config", "check", env=PLANTED_ENV)
    assert result.exit_code == 0
    assert SECRET not in outputs(result)


@pytest.mark.parametrize("as_json", [[], ["--json"]], ids=["text", "json"])
def test_planted_secret_in_a_url_of_the_file(tmp_path: Path, as_json: list[str]) -> None:
    path = tmp_path / "deploy.toml"
    path.write_text(CHECKED.replace("127.0.0.1:PORT", f"admin:{SECRET}@127.0.0.1:8080"))
    for command in (["config", "check"], ["smoke", "--env", "staging"]):
        result = invoke("--config", str(path), "-v", *as_json, *command, env=PLANTED_ENV)
        assert result.exit_code == 2
        assert SECRET not in outputs(result)
        assert "credentials" in result.stderr


@pytest.mark.parametrize("as_json", [[], ["--json"]], ids=["text", "json"])
def test_planted_secret_smoke_against_nothing(checked_config: Path, as_json: list[str]) -> None:
    result = invoke("--config", str(checked_config), *as_json, "smoke", "--env", "staging",
                    env=PLANTED_ENV)  # fmt: skip
    assert result.exit_code == 1, result.output
    assert SECRET not in outputs(result)


def test_planted_secret_in_a_base_url_that_got_past_the_file(
    checked_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Masked in smoke's header and its JSON report even if a URL with credentials were loaded."""
    config = load_config(checked_config)
    staging = config.environments["staging"]
    leaky = dataclasses.replace(
        staging, base_url=staging.base_url.replace("http://", f"http://admin:{SECRET}@")
    )
    config = dataclasses.replace(config, environments=types.MappingProxyType({"staging": leaky}))
    monkeypatch.setattr(AppState, "config", lambda self: config)
    for as_json in ([], ["--json"]):
        result = invoke(*as_json, "smoke", "--env", "staging", env=PLANTED_ENV)
        assert result.exit_code == 1
        assert SECRET not in outputs(result)
        assert "admin:" not in outputs(result)


def compose_failure() -> ExternalCommandFailed:
    """What Target.compose raises when Compose fails: its argv, stdout and stderr as facts."""
    argv = ["docker", "compose", "-p", "svc", "run", "-e", f"PGPASSWORD={SECRET}", "db"]
    return ExternalCommandFailed(
        f"docker compose failed on environment staging (exit 1): auth failed for {SECRET}",
        facts={
            "argv": argv,
            "stdout": f"POSTGRES_PASSWORD={SECRET}\nready",
            "stderr": f"FATAL: password authentication failed (password {SECRET})",
            "url": f"postgresql://app:{SECRET}@db:5432/app",
        },
    )


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(compose_failure(), id="compose-output"),
        pytest.param(RuntimeError(f"connect to http://u:{SECRET}@host failed"), id="exception"),
        pytest.param(KeyError(SECRET), id="bug"),
    ],
)
@pytest.mark.parametrize("as_json", [[], ["--json"]], ids=["text", "json"])
def test_planted_secret_in_an_error(
    error: BaseException, as_json: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from deploytools.steps import status as status_step

    def failing(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(status_step, "run", failing)
    result = invoke("--config", REPO_CONFIG, "-v", *as_json, "status", "--env", "staging",
                    env=PLANTED_ENV)  # fmt: skip
    assert result.exit_code in (3, 70)
    assert SECRET not in outputs(result)
    if as_json:
        assert one_json_object(result)["ok"] is False


def test_json_error_with_facts_json_cannot_hold_is_still_one_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Facts are whatever the library had at hand; the error object must print all the same."""
    import datetime

    from deploytools.steps import status as status_step

    def failing(*args: object, **kwargs: object) -> None:
        raise ExternalCommandFailed(
            "pg_dump failed",
            facts={"when": datetime.datetime(2026, 1, 2), "raw": b"\xff", "ids": {3}, "n": 1e999},
        )

    monkeypatch.setattr(status_step, "run", failing)
    result = invoke("--config", REPO_CONFIG, "--json", "status", "--env", "staging")
    assert result.exit_code == 3
    error = one_json_object(result)["error"]
    assert isinstance(error, dict)
    assert error["facts"]["n"] is None
    assert "2026-01-02" in error["facts"]["when"]


def test_planted_secret_in_a_compose_child_and_its_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The runner's other secrets never reach Compose's environment, and the secrets Compose
    does get (the environment's named ones) never reach the output when it fails quoting them."""
    from collections.abc import Mapping, Sequence

    from deploytools.commands import compose as compose_cmd
    from deploytools.engine import process
    from deploytools.steps import status as status_step
    from deploytools.target import Target

    named = "NamedComposeSecret-51c0"
    planted = {**PLANTED_ENV, "POSTGRES_PASSWORD": named, "APP_SECRET_KEY": named}
    child_env: dict[str, str] = {}

    def runner(
        argv: Sequence[str], *, env: Mapping[str, str], timeout: float, cwd: str | None = None
    ) -> process.ProcessResult:
        child_env.update(env)
        said = f"FATAL: password authentication failed for {env['POSTGRES_PASSWORD']}"
        return process.ProcessResult(tuple(argv), 1, f"PGPASSWORD={named}", said)

    monkeypatch.setattr(
        "deploytools.target.detect_compose",
        lambda host: compose_cmd.ComposeCli(prefix=("docker-compose",), version="1.29.2"),
    )

    def status_via_compose(ctx: object, *args: object, **kwargs: object) -> None:
        config = load_config(REPO_CONFIG)
        target = Target.for_environment(config, "staging", runner=runner)
        target.compose(compose_cmd.config, what="checking the Compose files")

    monkeypatch.setattr(status_step, "run", status_via_compose)
    for as_json in ([], ["--json"]):
        result = invoke("--config", REPO_CONFIG, "-v", *as_json, "status", "--env", "staging",
                        env=planted)  # fmt: skip
        assert result.exit_code == 3, result.output
        assert SECRET not in outputs(result) and named not in outputs(result)
    assert child_env["POSTGRES_PASSWORD"] == named  # Compose got the secret it is named
    assert SECRET not in child_env.values()  # and none of the runner's others
    assert not [k for k in child_env if k.startswith(("GITHUB_", "AWS_"))]
