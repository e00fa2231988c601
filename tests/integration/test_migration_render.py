"""The migration lint renders the SQL inside the release's own image, confined, on the real engine.

`image build` of the reference service's v1.15.2 lints the image it built and labels it with
the verdict. Hostile migrations are tiny images FROM the 1.15.2 release image with one more
migration (0003): one that dumps its environment and tries the network at import, one that
loops, one that forks and leaves its child running, one that prints, one that exits. Each ends
in one clear error (or a clean pass) with no render container and no process left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from click.testing import CliRunner

from deploytools.cli import cli
from deploytools.config import Config, load_config
from deploytools.engine.connection import connect
from deploytools.errors import CheckFailed, UsageError
from deploytools.migration_render import (
    RENDER_LABEL,
    RenderLimits,
    render_environment,
    run_in_image,
)
from deploytools.migration_tree import RevisionFile, Revisions
from deploytools.steps.migrate import EXPAND_ONLY_LABEL
from deploytools.steps.migration_check import FROM_LABEL, HEADS_LABEL, Baseline, lint_image
from tests.helpers.shared_stack import build_variant

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "deploy.toml"
VERSIONS = "/app/migrations/versions/"
PLANTED = {
    "POSTGRES_PASSWORD": f"dtrender-planted-{secrets.token_hex(6)}",
    "GITHUB_TOKEN": f"ghp_dtrenderplanted{secrets.token_hex(8)}",
    "AWS_SECRET_ACCESS_KEY": f"dtrender-aws-{secrets.token_hex(6)}",
}

MIGRATION_HEAD = '''"""{doc}"""
import os
import sys
import time

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

'''
TAIL = """

def upgrade() -> None:
    op.execute("COMMENT ON TABLE role_assignment_audit IS 'dtrender'")


def downgrade() -> None:
    pass
"""

PROBE = (
    MIGRATION_HEAD.format(doc="dumps its environment and tries the network at import")
    + """
import socket

os.system("echo ENV-DUMP-START >&2; env >&2; echo ENV-DUMP-END >&2")
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3).close()
    print("NETWORK-OPEN", file=sys.stderr)
except OSError as exc:
    print(f"NETWORK-BLOCKED {exc}", file=sys.stderr)
try:
    socket.getaddrinfo("example.com", 443)
    print("DNS-OPEN", file=sys.stderr)
except OSError as exc:
    print(f"DNS-BLOCKED {exc}", file=sys.stderr)
try:
    with open("/app/dtrender-written", "w") as f:
        f.write("x")
    print("ROOT-WRITABLE", file=sys.stderr)
except OSError as exc:
    print(f"ROOT-READ-ONLY {exc}", file=sys.stderr)
"""
    + TAIL
)
LOOP = MIGRATION_HEAD.format(doc="loops forever at import") + "\nwhile True:\n    pass\n" + TAIL
FORK = (
    MIGRATION_HEAD.format(doc="forks a child that never ends")
    + """
if os.fork() == 0:
    os.setsid()
    while True:
        time.sleep(1)
"""
    + TAIL
)
PRINT = MIGRATION_HEAD.format(doc="prints") + '\nprint("hello from a migration")\n' + TAIL
EXIT = (
    MIGRATION_HEAD.format(doc="exits in its upgrade")
    + """

def upgrade() -> None:
    op.execute("COMMENT ON TABLE role_assignment_audit IS 'dtrender'")
    sys.exit(0)


def downgrade() -> None:
    pass
"""
)


@pytest.fixture(scope="module")
def variants(
    docker_client: docker.DockerClient,
    release_images,  # type: ignore[no-untyped-def]
) -> Iterator[dict[str, str]]:
    """One image per hostile migration, FROM the 1.15.2 release image."""
    base = release_images["1.15.2"]
    tags: dict[str, str] = {}
    try:
        for name, text in {
            "probe": PROBE,
            "loop": LOOP,
            "fork": FORK,
            "print": PRINT,
            "exit": EXIT,
        }.items():
            tag = f"dtrender-hostile:{name}-{secrets.token_hex(3)}"
            tags[name] = build_variant(
                docker_client,
                base,
                tag,
                dockerfile=f"COPY 0003_hostile.py {VERSIONS}0003_hostile.py\n",
                files={"0003_hostile.py": text},
            )
        yield tags
    finally:
        for tag in tags.values():
            with contextlib.suppress(docker.errors.APIError):
                docker_client.api.remove_image(tag, force=True)


def _config(timeout_s: float = 60.0, **release: object) -> Config:
    config = load_config(CONFIG)
    settings = dataclasses.replace(config.release, lint_timeout_s=timeout_s, **release)
    return dataclasses.replace(config, release=settings)


def _revisions(text: str) -> Revisions:
    return Revisions({"0003": RevisionFile("0003", ("0002",), "0003_hostile.py", text)})


def _render_containers(client: docker.DockerClient) -> list[str]:
    found = client.containers.list(all=True, filters={"label": f"{RENDER_LABEL}=true"})
    return [c.name for c in found]


def _alembic_processes() -> list[str]:
    """Processes of the host (the engine is local) still running a migration's Alembic."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if "/app/alembic.ini" in line]


def test_image_build_labels_the_verdict_and_the_heads(
    release_repo,  # type: ignore[no-untyped-def]
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    repository = f"dtrender/rbac-api-{secrets.token_hex(4)}"
    text = CONFIG.read_text(encoding="utf-8").replace(
        'image_repository = "ghcr.io/example/rbac-api"', f'image_repository = "{repository}"'
    )
    config = tmp_path / "deploy.toml"
    config.write_text(text.replace('compose_files = ["', f'compose_files = ["{REPO_ROOT}/'))
    try:
        result = CliRunner().invoke(
            cli,
            [
                *("--config", str(config), "image", "build", "--tag", "v1.15.2"),
                *("--repo", str(release_repo.path)),
            ],
        )
        assert result.exit_code == 0, result.output
        image = docker_client.images.get(f"{repository}:1.15.2")
        assert image.labels[EXPAND_ONLY_LABEL] == "true"  # 0002 only adds a table
        assert image.labels[HEADS_LABEL] == "0002"
        assert image.labels[FROM_LABEL] == "0001"  # v1.15.1's head
        assert image.labels["org.opencontainers.image.version"] == "1.15.2"
        # The tag is on the labelled image, and the printed pin is its ID.
        assert result.stdout.strip() == f"{repository}:1.15.2@{image.id}"
        # Only the release's tag is left: the unlinted one went. (The image may carry other
        # repositories' tags: the label build is cached, so an equal build elsewhere is this
        # very image.)
        tags = {t for i in docker_client.images.list(name=repository) for t in i.tags}
        assert {t for t in tags if t.startswith(f"{repository}:")} == {f"{repository}:1.15.2"}
        assert "0 migration" not in result.stderr and "expand-only" in result.stderr
        assert _render_containers(docker_client) == []
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(f"{repository}:1.15.2", force=True)


def test_a_migration_at_import_sees_no_secret_no_network_and_a_read_only_root(
    variants: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)  # in deploytools' own environment
    engine = connect("")
    ran = run_in_image(
        engine,
        variants["probe"],
        ["alembic", "-c", "/app/alembic.ini", "heads"],
        environment=render_environment(),
        limits=RenderLimits(timeout_s=60),
    )
    assert ran.exit_code == 0, ran.stderr
    dump = ran.stderr.split("ENV-DUMP-START", 1)[1].split("ENV-DUMP-END", 1)[0]
    assert "DATABASE_URL=postgresql://offline" in dump  # the dump did run
    for name, value in PLANTED.items():
        assert value not in ran.stderr, name
        assert f"{name}=" not in dump, name
    assert "NETWORK-BLOCKED" in ran.stderr and "NETWORK-OPEN" not in ran.stderr
    assert "DNS-BLOCKED" in ran.stderr
    assert "ROOT-READ-ONLY" in ran.stderr
    assert "0003 (head)" in ran.stdout
    assert _render_containers(docker.from_env()) == []


def test_a_looping_migration_ends_at_the_deadline_with_nothing_left_running(
    variants: dict[str, str], docker_client: docker.DockerClient
) -> None:
    with pytest.raises(CheckFailed) as caught:
        lint_image(
            connect(""),
            variants["loop"],
            config=_config(timeout_s=5),
            revisions=_revisions(LOOP),
            baseline=Baseline("0002", "test"),
        )
    assert "did not finish within 5 s" in caught.value.message
    assert "\n" not in caught.value.one_line()
    assert _render_containers(docker_client) == []
    assert _alembic_processes() == []


def test_a_forked_child_does_not_outlive_the_render(
    variants: dict[str, str], docker_client: docker.DockerClient
) -> None:
    lint = lint_image(
        connect(""),
        variants["fork"],
        config=_config(),
        revisions=_revisions(FORK),
        baseline=Baseline("0002", "test"),
    )
    assert lint.heads == ("0003",)
    assert lint.result.revisions == ("0003",)
    assert _render_containers(docker_client) == []
    assert _alembic_processes() == []


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("print", "is not SQL: 'hello from a migration'"),
        ("exit", "stops before revision 0003"),
    ],
)
def test_a_migration_that_prints_or_exits_is_one_clear_line(
    variants: dict[str, str], docker_client: docker.DockerClient, variant: str, expected: str
) -> None:
    with pytest.raises(CheckFailed) as caught:
        lint_image(
            connect(""),
            variants[variant],
            config=_config(),
            revisions=_revisions(PRINT if variant == "print" else EXIT),
            baseline=Baseline("0002", "test"),
        )
    assert expected in caught.value.message
    assert caught.value.exit_code == 1
    assert "\n" not in caught.value.one_line()
    assert _render_containers(docker_client) == []


def test_a_wrong_alembic_ini_in_the_image_is_an_error_never_expand_only(
    release_images,  # type: ignore[no-untyped-def]
    docker_client: docker.DockerClient,
) -> None:
    with pytest.raises(UsageError) as caught:
        lint_image(
            connect(""),
            release_images["1.15.2"],
            config=_config(alembic_command=("alembic", "-c", "/app/no-such-alembic.ini")),
            revisions=Revisions({}),
            baseline=Baseline("0001", "test"),
        )
    assert "found no configuration" in caught.value.message
    assert "/app/no-such-alembic.ini" in caught.value.message
    assert caught.value.exit_code == 2
    assert _render_containers(docker_client) == []
