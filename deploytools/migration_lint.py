"""Offline lint of the Alembic migrations a release adds: what they lock, what they break.

The SQL is what Alembic itself would run: `alembic upgrade PREV_HEAD:HEAD --sql` through Alembic's
API, on the release's own source (extracted from the tag, not the work tree). That runs the
service's `env.py`, which may change `sys.path`, import the service and reconfigure logging, so it
runs in a child Python process (`python -m deploytools.migration_lint`), never in ours, and each
release's modules stay apart. No database is contacted: offline mode only renders SQL.

Each statement is matched against the rules of `deploytools.sql_lint`, for operations that take
long ACCESS EXCLUSIVE locks or break the previous release while it still runs. A finding fails
the release unless the migration file acknowledges it with a comment naming the rule and a
reason:

    # deploytools: allow add-not-null-column the table is empty in every environment

The lint also classifies the release as expand-only (every statement additive, so the old release
keeps working beside the new schema) or not; later steps choose the deploy strategy from that.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploytools.engine import process
from deploytools.errors import DeadlineExceeded, ExternalCommandFailed

# The SQL rules live in deploytools.sql_lint; their names stay importable from here.
from deploytools.sql_lint import (
    RULES,
    Finding,
    LintResult,
    Statement,
    acknowledgements,
    lint_sql,
    split_statements,
)

__all__ = [
    "RULES",
    "AlembicScripts",
    "Finding",
    "LintResult",
    "Statement",
    "acknowledgements",
    "inspect_scripts",
    "lint_release",
    "lint_sql",
    "split_statements",
]

#: Offline mode needs a URL only for the dialect; nothing connects to it.
OFFLINE_DATABASE_URL = "postgresql://offline@offline.invalid/offline"
GENERATE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class AlembicScripts:
    """What the child process reports about one source tree's migrations."""

    heads: tuple[str, ...]
    files: Mapping[str, str]  # revision -> path relative to the source directory
    sql: str = ""


#: What the Python child needs besides the allow-list to find deploytools and the service.
PYTHON_NAMES = frozenset({"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONUTF8"})


# -- Generating the SQL ---------------------------------------------------------------------------


def inspect_scripts(
    source: Path,
    *,
    alembic_ini: str = "alembic.ini",
    sql_range: str | None = None,
    timeout_s: float = GENERATE_TIMEOUT_S,
) -> AlembicScripts:
    """The heads and revision files of `source`'s migrations and, given `sql_range` (for example
    "0001:head" or "head" from the start), the offline SQL of that upgrade.

    :param source: the service's source directory (holding `alembic_ini`).
    :param alembic_ini: the Alembic configuration, relative to `source`.
    :param sql_range: the upgrade range to render; None renders nothing.
    :param timeout_s: the deadline for the child process.
    """
    argv = [sys.executable, "-m", "deploytools.migration_lint", str(source), alembic_ini]
    if sql_range:
        argv.append(sql_range)
    # The service's env.py reads its URL from the environment; offline, only the dialect matters,
    # and a real URL (with its password) must not be needed to lint. The child gets the
    # allow-list and Python's own variables, no secret of ours.
    python = {k: v for k, v in os.environ.items() if k in PYTHON_NAMES}
    env = process.child_env({**python, "DATABASE_URL": OFFLINE_DATABASE_URL})
    try:
        done = process.run(argv, env=env, cwd=str(source), timeout=timeout_s)
    except process.ProcessTimedOut:
        raise DeadlineExceeded(
            f"rendering the migrations' SQL did not finish within {timeout_s:.0f} s",
            untouched="nothing was changed",
            facts={"argv": argv},
        ) from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise ExternalCommandFailed(
            "Alembic could not render the migrations offline: "
            + (lines[-1] if lines else f"exit {done.returncode}"),
            untouched="nothing was changed",
            hint=f"run `alembic upgrade {sql_range or 'head'} --sql` in the release's source",
            facts={"argv": argv, "stderr": done.stderr[-4000:]},
        )
    data = json.loads(done.stdout)
    return AlembicScripts(heads=tuple(data["heads"]), files=data["files"], sql=data.get("sql", ""))


def _child(source: str, alembic_ini: str, sql_range: str | None) -> dict[str, Any]:
    """Runs in the child process: Alembic's API on one source tree."""
    # Alembic (and SQLAlchemy under it) is loaded in the child only: the CLI's start-up stays
    # light, and the parent never needs it.
    from alembic import command  # start-up time: see above
    from alembic.config import Config as AlembicConfig  # start-up time: see above
    from alembic.script import ScriptDirectory  # start-up time: see above

    buffer = io.StringIO()
    cfg = AlembicConfig(str(Path(source) / alembic_ini), stdout=buffer)
    cfg.output_buffer = buffer
    if not cfg.get_main_option("sqlalchemy.url"):
        cfg.set_main_option("sqlalchemy.url", OFFLINE_DATABASE_URL)
    scripts = ScriptDirectory.from_config(cfg)
    files = {
        s.revision: os.path.relpath(s.path, source) for s in scripts.walk_revisions("base", "heads")
    }
    heads = list(scripts.get_heads())
    sql = ""
    if sql_range:
        # Our stdout carries the JSON answer: whatever env.py prints goes to stderr instead.
        with contextlib.redirect_stdout(sys.stderr):
            command.upgrade(cfg, sql_range, sql=True)
        sql = buffer.getvalue()
    logging.shutdown()
    return {"heads": heads, "files": files, "sql": sql}


def lint_release(
    source: Path,
    *,
    previous_head: str | None,
    head: str,
    files: Mapping[str, str],
    alembic_ini: str = "alembic.ini",
) -> LintResult:
    """Render and lint the migrations from `previous_head` (None: from the start) to `head`.

    :param source: the release's extracted source directory.
    :param previous_head: the previous release's single Alembic head, or None.
    :param head: this release's single head.
    :param files: revision -> migration file path relative to `source`.
    :param alembic_ini: the Alembic configuration, relative to `source`.
    """
    if previous_head == head:
        return LintResult(previous_head, head, (), (), expand_only=True)
    sql_range = f"{previous_head}:{head}" if previous_head else head
    rendered = inspect_scripts(source, alembic_ini=alembic_ini, sql_range=sql_range)
    sources: dict[str, str] = {}
    for revision, rel in files.items():
        try:
            sources[revision] = (source / rel).read_text(encoding="utf-8")
        except OSError:
            sources[revision] = ""
    return lint_sql(
        rendered.sql,
        migration_sources=sources,
        migration_files=files,
        from_revision=previous_head,
        to_revision=head,
    )


if __name__ == "__main__":  # the child process of inspect_scripts
    _source, _ini = sys.argv[1], sys.argv[2]
    _range = sys.argv[3] if len(sys.argv) > 3 else None
    _result = _child(_source, _ini, _range)
    sys.stdout.write(json.dumps(_result))
