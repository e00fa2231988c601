"""The migration lint's render, as data: Alembic's argv, the confined container's spec, the
parsing of what Alembic printed, the revision graph read from a tree as text, the baseline."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from deploytools.commands import alembic
from deploytools.config import ReleaseConfig, load_config
from deploytools.context import StepContext
from deploytools.engine.client import Container
from deploytools.engine.git import run_git
from deploytools.errors import CheckFailed, UsageError
from deploytools.migration_render import (
    OFFLINE_DATABASE_URL,
    RENDER_LABEL,
    UNTIL_LABEL,
    Ran,
    RenderLimits,
    check_sql,
    failure_of,
    parse_heads,
    render_environment,
    render_spec,
    statement_starts,
)
from deploytools.migration_tree import read_revisions
from deploytools.steps.migration_check import Baseline, previous_head, production_baseline
from deploytools.steps.release_source import extracted, resolve_baseline
from deploytools.steps.release_version import Version

BASE = ["alembic", "-c", "/app/alembic.ini"]
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_alembic_is_the_migration_command_up_to_its_upgrade() -> None:
    command = ("alembic", "-c", "/app/alembic.ini", "upgrade", "head")
    assert alembic.base_command(command) == BASE
    assert alembic.base_command(("python", "-m", "alembic", "upgrade", "head")) == [
        "python",
        "-m",
        "alembic",
    ]
    assert alembic.base_command(("./migrate.sh",)) is None
    assert alembic.base_command(("./migrate.sh",), ("alembic", "-c", "x.ini")) == [
        "alembic",
        "-c",
        "x.ini",
    ]
    assert ReleaseConfig().alembic_base(command) == BASE


def test_the_commands_are_heads_and_an_offline_upgrade_between_two_heads() -> None:
    assert alembic.heads(BASE) == [*BASE, "heads"]
    assert alembic.offline_upgrade(BASE, "0001", "0002") == [*BASE, "upgrade", "0001:0002", "--sql"]
    assert alembic.offline_upgrade(BASE, None, "0002") == [*BASE, "upgrade", "0002", "--sql"]


def test_the_container_is_confined_and_gets_no_variable_of_ours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTGRES_PASSWORD", "planted")
    monkeypatch.setenv("GITHUB_TOKEN", "planted")
    env = render_environment({"APP_SECRET_KEY": "placeholder-only-for-import"})
    assert env == [
        "APP_SECRET_KEY=placeholder-only-for-import",
        f"DATABASE_URL={OFFLINE_DATABASE_URL}",
    ]
    spec = render_spec(
        "rbac-api:1.15.2",
        alembic.heads(BASE),
        name="deploytools-render-ab12",
        environment=env,
        limits=RenderLimits(timeout_s=30),
        until=1_000.7,
    )
    assert spec.entrypoint == ["alembic"]
    assert spec.command == ["-c", "/app/alembic.ini", "heads"]
    assert spec.environment == tuple(env)
    assert spec.network_mode == "none" and not spec.network
    assert spec.read_only and set(spec.tmpfs) == {"/tmp"}
    assert "noexec" in spec.tmpfs["/tmp"]
    assert (spec.memory, spec.cpus, spec.pids) == ("512m", 1.0, 64)
    assert spec.cap_drop == ("ALL",) and spec.security_opt == ("no-new-privileges",)
    assert spec.mounts == () and spec.publish_on == {}
    assert spec.labels == {RENDER_LABEL: "true", UNTIL_LABEL: "1000"}
    assert not spec.auto_remove  # removed by its caller, after its output is read


def test_heads_are_read_from_alembic_output_and_printed_lines_are_not_heads() -> None:
    out = "hello from a migration\n0002 (head)\nab12cd (feature) (head)\nnot a head\n"
    assert parse_heads(out) == ("0002", "ab12cd")
    assert parse_heads("") == ()


OFFLINE = """BEGIN;

SET LOCAL lock_timeout = '5s';

-- Running upgrade 0001 -> 0002

CREATE TABLE audit (
    id SERIAL NOT NULL,
    note TEXT DEFAULT 'a;b',
    PRIMARY KEY (id)
);

CREATE FUNCTION f() RETURNS void AS $$
BEGIN
  UPDATE audit SET note = 'x';

  something inside a body;
END $$ LANGUAGE plpgsql;

/* a comment; with a semicolon */
UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001';

COMMIT;

"""


def test_whole_offline_sql_passes_and_its_statements_are_found() -> None:
    check_sql(OFFLINE, "img", "0002")
    firsts = [text.split()[0] for _, text in statement_starts(OFFLINE)]
    assert firsts == ["BEGIN", "SET", "CREATE", "CREATE", "UPDATE", "COMMIT"]


def test_something_printed_into_the_sql_is_refused_naming_its_line() -> None:
    printed = OFFLINE.replace("-- Running upgrade", "hello from a migration\n-- Running upgrade")
    with pytest.raises(CheckFailed) as caught:
        check_sql(printed, "img", "0002")
    assert "line 5 of the offline SQL rendered in img is not SQL: 'hello" in caught.value.message
    with pytest.raises(CheckFailed, match="is not SQL: 'bye'"):
        check_sql(OFFLINE + "bye\n", "img", "0002")


def test_sql_that_stops_before_the_head_is_refused() -> None:
    stopped = OFFLINE.split("/* a comment")[0]
    with pytest.raises(CheckFailed, match="stops before revision 0002"):
        check_sql(stopped, "img", "0002")
    first = "INSERT INTO alembic_version (version_num) VALUES ('0001');\n"
    check_sql(first, "img", "0001")  # the first revision inserts instead of updating


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


INI = "[alembic]\nscript_location = %(here)s/migrations\n"


def test_revisions_are_read_as_text_without_running_them(tmp_path: Path) -> None:
    _write(tmp_path / "alembic.ini", INI)
    versions = tmp_path / "migrations" / "versions"
    _write(
        versions / "0001_a.py",
        'raise SystemExit("never run")\nrevision = "0001"\ndown_revision = None\n',
    )
    _write(
        versions / "0002_b.py",
        'revision: str = "0002"\ndown_revision: str | None = "0001"\n'
        "# deploytools: allow drop-table the table was never used\n",
    )
    _write(tmp_path / "app" / "other.py", 'revision = "zz"\ndown_revision = None\n')
    revisions = read_revisions(tmp_path, "alembic.ini")
    assert revisions.heads == ("0002",)
    assert revisions.paths == {
        "0001": "migrations/versions/0001_a.py",
        "0002": "migrations/versions/0002_b.py",
    }
    assert "allow drop-table" in revisions.texts["0002"]
    _write(versions / "0003_c.py", 'revision = "0003"\ndown_revision = "0001"\n')
    assert read_revisions(tmp_path, "alembic.ini").heads == ("0002", "0003")


def test_a_wrong_alembic_ini_is_an_error_never_no_migrations(tmp_path: Path) -> None:
    with pytest.raises(CheckFailed) as caught:
        read_revisions(tmp_path, "config/alembic.ini")
    assert "there is no config/alembic.ini" in caught.value.message
    assert caught.value.exit_code == 1


def test_a_revision_that_is_not_a_literal_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "alembic.ini", INI)
    _write(
        tmp_path / "migrations" / "versions" / "x.py",
        'import os\nrevision = os.environ["REV"]\ndown_revision = None\n',
    )
    with pytest.raises(CheckFailed, match="not a literal string"):
        read_revisions(tmp_path, "alembic.ini")


def test_the_previous_release_head_is_the_baseline(tmp_path: Path) -> None:
    _write(tmp_path / "alembic.ini", INI)
    _write(
        tmp_path / "migrations" / "versions" / "a.py", 'revision = "0001"\ndown_revision = None\n'
    )
    version = Version.parse("v1.15.1")
    assert version is not None
    found = previous_head(tmp_path, version, "alembic.ini")
    assert (found.revision, found.source) == ("0001", "the head of v1.15.1")
    none = previous_head(None, version, "alembic.ini")
    assert none.revision is None and "has no alembic.ini" in none.source


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=_git_env())


def _git_env() -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": "/nonexistent",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
    }


def test_a_tree_whose_symlink_leaves_it_is_refused_and_leaves_no_directory(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "alembic.ini").symlink_to("/etc/passwd")
    _git(repo, "add", "alembic.ini")
    _git(repo, "commit", "-q", "-m", "a link out")
    _git(repo, "tag", "-a", "v1.0.0", "-m", "v1.0.0")
    temp = Path(tempfile.gettempdir())  # where extracted() makes its directory (TMPDIR)
    before = set(temp.glob("deploytools-src-*"))
    with pytest.raises(CheckFailed) as caught, extracted(repo, "refs/tags/v1.0.0"):
        pass
    assert "the tree of v1.0.0 holds a link that leaves it" in caught.value.message
    assert "\n" not in caught.value.one_line()
    assert set(temp.glob("deploytools-src-*")) == before


def test_the_baseline_is_the_revision_given_then_production_for_a_first_release(
    tmp_path: Path,
) -> None:
    ctx = StepContext(config=load_config(REPO_ROOT / "deploy.toml"))
    asked: list[frozenset[str]] = []

    def production(_ctx: StepContext, known: frozenset[str]) -> Baseline:
        asked.append(known)
        return Baseline("0007", "the first release: production's database is at it")

    def resolve(since: str | None) -> Baseline:
        return resolve_baseline(
            ctx,
            root=tmp_path,
            previous=None,
            source_dir=".",
            since_revision=since,
            runner=run_git,
            known=frozenset({"0007"}),
            production=production,
        )

    assert resolve("0005") == Baseline("0005", "--since-revision")
    assert asked == []
    assert resolve(None).revision == "0007"
    assert asked == [frozenset({"0007"})]


def test_no_production_environment_lints_a_first_release_from_the_empty_database() -> None:
    config = load_config(REPO_ROOT / "deploy.toml")
    staging_only = dataclasses.replace(
        config, environments={"staging": config.environments["staging"]}
    )
    found = production_baseline(StepContext(config=staging_only))
    assert found.revision is None and "no production environment" in found.source


def test_alembic_without_its_configuration_is_a_usage_error_and_other_failures_checks() -> None:
    missing = Ran(
        ("alembic", "-c", "/app/x.ini", "heads"),
        255,
        "  FAILED: No config file '/app/x.ini' found, or file has no '[alembic]' section\n",
        "",
    )
    error = failure_of(missing, "img", "`alembic heads`")
    assert isinstance(error, UsageError) and error.exit_code == 2
    assert "FAILED: No config file '/app/x.ini' found" in error.message
    crashed = Ran(("alembic", "heads"), 1, "", "Traceback ...\nModuleNotFoundError: No module\n")
    error = failure_of(crashed, "img", "`alembic heads`")
    assert isinstance(error, CheckFailed) and error.exit_code == 1
    assert error.message.endswith("(exit 1): ModuleNotFoundError: No module")


class _FakeSdkContainer:
    """A container that exits after `runs` reloads (never, when None)."""

    def __init__(self, runs: int | None) -> None:
        self.runs = runs
        self.attrs: dict[str, object] = {"State": {"Status": "running"}}

    def reload(self) -> None:
        if self.runs is not None:
            self.runs -= 1
            if self.runs <= 0:
                self.attrs = {"State": {"Status": "exited", "ExitCode": 3}}


def test_wait_gives_the_exit_code_or_none_at_its_deadline() -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    done = Container(_FakeSdkContainer(runs=3))
    assert done.wait(timeout_s=10, clock=clock, sleep=sleep) == 3
    looping = Container(_FakeSdkContainer(runs=None))
    assert looping.wait(timeout_s=5, clock=clock, sleep=sleep) is None
    assert 5.0 <= now[0] <= 5.0 + 0.4 + 1e-9
