"""Compose argv builders, compared exactly: no Docker needed."""

from __future__ import annotations

from deploytools.commands import compose
from deploytools.commands.compose import ComposeCli

V1 = ComposeCli(prefix=("docker-compose",), version="1.29.2")
V2 = ComposeCli(prefix=("docker", "compose"), version="2.29.1")
FILES = ["/srv/app/docker-compose.prod.yml"]


def test_major_version_follows_the_prefix() -> None:
    assert V1.major == 1
    assert V2.major == 2


def test_version_probe() -> None:
    assert compose.version_probe(("docker", "compose")) == [
        "docker",
        "compose",
        "version",
        "--short",
    ]


def test_up_pins_project_and_files() -> None:
    assert compose.up(V2, "rbac-staging", FILES) == [
        "docker", "compose", "--project-name", "rbac-staging",
        "--file", "/srv/app/docker-compose.prod.yml", "up", "--detach",
    ]  # fmt: skip


def test_up_one_service_without_deps_recreated() -> None:
    assert compose.up(V1, "p", FILES, ["app"], no_deps=True, force_recreate=True) == [
        "docker-compose", "--project-name", "p", "--file", FILES[0],
        "up", "--detach", "--no-deps", "--force-recreate", "app",
    ]  # fmt: skip


def test_several_files_keep_their_order() -> None:
    assert compose.base(V1, "p", ["a.yml", "b.yml"]) == [
        "docker-compose", "--project-name", "p", "--file", "a.yml", "--file", "b.yml",
    ]  # fmt: skip


def test_stop_with_timeout() -> None:
    assert compose.stop(V1, "p", FILES, ["app"], timeout_s=5) == [
        "docker-compose", "--project-name", "p", "--file", FILES[0],
        "stop", "--timeout", "5", "app",
    ]  # fmt: skip


def test_rm_never_removes_volumes() -> None:
    argv = compose.rm(V2, "p", FILES, ["app"])
    assert argv[-4:] == ["rm", "--force", "--stop", "app"]
    assert "-v" not in argv
    assert "--volumes" not in argv


def test_down_keeps_volumes_unless_asked() -> None:
    assert compose.down(V1, "p", FILES)[-2:] == ["down", "--remove-orphans"]
    assert compose.down(V1, "p", FILES, volumes=True)[-3:] == [
        "down",
        "--remove-orphans",
        "--volumes",
    ]


def test_run_once_passes_secret_names_not_values() -> None:
    argv = compose.run_once(
        V1, "p", FILES, "app", ["alembic", "upgrade", "head"], env=["DATABASE_URL"]
    )
    assert argv == [
        "docker-compose", "--project-name", "p", "--file", FILES[0],
        "run", "--rm", "--no-deps", "-T", "-e", "DATABASE_URL", "app", "alembic", "upgrade", "head",
    ]  # fmt: skip


def test_config_is_quiet() -> None:
    assert compose.config(V2, "p", FILES)[-2:] == ["config", "--quiet"]


def test_ssh_engine_probe_never_prompts_and_is_bounded() -> None:
    from deploytools.commands.ssh import engine_probe

    assert engine_probe("ssh://deploy@prod.example.com:2222", connect_timeout_s=5) == [
        "ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-p", "2222", "--",
        "deploy@prod.example.com", "docker", "version", "--format", "{{.Server.APIVersion}}",
    ]  # fmt: skip
    assert engine_probe("ssh://prod", connect_timeout_s=3)[5:7] == ["--", "prod"]
