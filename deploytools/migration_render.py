"""The migrations' SQL, rendered by Alembic inside the release's own image, never in deploytools.

The image has the service, its dependencies and Alembic; deploytools' own interpreter never
imports any of them. Each Alembic command (`heads`, `upgrade FROM:TO --sql`) runs in a one-off
container of the image, confined: no network (`--network none`), no secret (the environment is
only a placeholder DATABASE_URL and `release.lint_env`, nothing of ours), a read-only root with a
small /tmp, no capabilities, CPU, memory and process limits, and a deadline: a migration that
loops is killed with its container, which is then removed, and so is every process it forked.

The container's standard output carries what Alembic writes: the heads, or the SQL. A migration
or env.py that prints there, or ends the process early (`sys.exit(0)`), leaves output that is not
the whole SQL; both are refused with one line (`check_sql`), never linted as if they were SQL.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass

from deploytools.commands import alembic
from deploytools.engine.client import Engine, OneOff
from deploytools.engine.errors import EngineAPIError, EngineError, ImageNotFound
from deploytools.errors import CheckFailed, EnvironmentUnreachable, UsageError
from deploytools.sql_lint import split_statements

#: Offline mode needs a URL only for the dialect; nothing connects to it (there is no network).
OFFLINE_DATABASE_URL = "postgresql://offline:offline@offline.invalid:5432/offline"
#: Every render container carries this label, and the wall-clock time it must be gone by.
RENDER_LABEL = "deploytools.migration-render"
UNTIL_LABEL = "deploytools.migration-render.until"
#: What the container may print before it is refused (Alembic's SQL is a few KB per migration).
MAX_OUTPUT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class RenderLimits:
    """The confinement of one render container. Defaults fit a 2-core host: one core, 512 MiB,
    64 processes (a fork bomb stops there), two minutes."""

    timeout_s: float = 120.0
    memory: str = "512m"
    cpus: float = 1.0
    pids: int = 64
    tmp_size: str = "64m"
    log_max_size: str = "64m"


@dataclass(frozen=True)
class Ran:
    """What one Alembic command printed in the image, and how it ended."""

    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str

    def last_line(self) -> str:
        """Alembic's FAILED line when it printed one, else the last line of stderr (or stdout)."""
        failed = [x for x in (self.stderr + "\n" + self.stdout).splitlines() if "FAILED" in x]
        lines = failed or (self.stderr or self.stdout).strip().splitlines()
        return lines[-1].strip() if lines else "no output"


def render_environment(extra: Mapping[str, str] | None = None) -> list[str]:
    """The container's whole environment (besides the image's own ENV): the placeholder URL
    and `extra` (release.lint_env, which may replace it). Nothing is taken from ours."""
    env = {"DATABASE_URL": OFFLINE_DATABASE_URL, **(extra or {})}
    return [f"{key}={value}" for key, value in sorted(env.items())]


def render_spec(
    image: str,
    argv: Sequence[str],
    *,
    name: str,
    environment: Sequence[str],
    limits: RenderLimits,
    until: float,
) -> OneOff:
    """The one-off container that runs `argv` in `image`, confined (see the module's doc).

    :param until: the wall-clock time (epoch seconds) after which a container left behind (its
        deploytools was killed) is removed by the next render (`sweep`).
    """
    return OneOff(
        image=image,
        name=name,
        entrypoint=[argv[0]],
        command=list(argv[1:]),
        environment=tuple(environment),
        network_mode="none",
        read_only=True,
        tmpfs={"/tmp": f"rw,noexec,nosuid,nodev,size={limits.tmp_size}"},  # noqa: S108 - its own
        memory=limits.memory,
        cpus=limits.cpus,
        pids=limits.pids,
        cap_drop=("ALL",),
        security_opt=("no-new-privileges",),
        log_max_size=limits.log_max_size,
        labels={RENDER_LABEL: "true", UNTIL_LABEL: str(int(until))},
    )


def sweep(engine: Engine, *, now: float) -> int:
    """Remove render containers past their deadline (left by a deploytools that was killed);
    how many."""
    removed = 0
    with suppress(EngineError):
        for container in engine.containers(labels=[f"{RENDER_LABEL}=true"]):
            try:
                until = float(container.labels.get(UNTIL_LABEL, "0"))
            except ValueError:
                until = 0.0
            if until < now:
                with suppress(EngineError):
                    container.remove(force=True, volumes=True)
                    removed += 1
    return removed


def run_in_image(
    engine: Engine,
    image: str,
    argv: Sequence[str],
    *,
    environment: Sequence[str],
    limits: RenderLimits,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    wall: Callable[[], float] = time.time,
) -> Ran:
    """Run `argv` in a confined one-off container of `image` until it exits or its deadline
    passes; the container is removed either way.

    :raises UsageError: the image is not on the engine, or has no program `argv[0]`.
    :raises CheckFailed: the command did not end within `limits.timeout_s`, ran out of memory
        or printed more than MAX_OUTPUT_BYTES.
    :raises EnvironmentUnreachable: the engine refused or broke.
    """
    shown = " ".join(argv)
    sweep(engine, now=wall())
    spec = render_spec(
        image,
        argv,
        name=f"deploytools-render-{secrets.token_hex(4)}",
        environment=environment,
        limits=limits,
        until=wall() + limits.timeout_s + 60,
    )
    try:
        container = engine.run(spec)
    except ImageNotFound:
        raise UsageError(
            f"image {image} is not on the engine",
            untouched="nothing was changed",
            hint="build it first (deploytools image build)",
        ) from None
    except EngineAPIError as exc:
        why = exc.explanation or str(exc)
        if "executable file not found" in why or "no such file or directory" in why:
            raise UsageError(
                f"image {image} has no program {argv[0]!r} to run `{shown}`",
                untouched="nothing was changed",
                hint="set release.alembic_command in deploy.toml to Alembic as the image runs it",
                facts={"argv": list(argv), "engine": why},
            ) from None
        raise EnvironmentUnreachable(
            f"the engine refused the migrations' render container: {why}",
            untouched="nothing was changed",
            facts={"argv": list(argv)},
        ) from None
    except EngineError as exc:
        raise EnvironmentUnreachable(
            f"the engine failed the migrations' render container: {exc}",
            untouched="nothing was changed",
        ) from None
    try:
        code = container.wait(timeout_s=limits.timeout_s, clock=clock, sleep=sleep)
        if code is None:
            raise CheckFailed(
                f"`{shown}` in {image} did not finish within {limits.timeout_s:.0f} s (a "
                "migration or env.py that loops or waits?); its container was killed and removed",
                untouched="nothing was changed",
                hint="run it in the image yourself, with no database and no network, and look "
                "for a loop or a wait at import",
                facts={"argv": list(argv), "timeout_s": limits.timeout_s},
            )
        if (container.attrs.get("State") or {}).get("OOMKilled"):
            raise CheckFailed(
                f"`{shown}` in {image} ran out of memory ({limits.memory}); its container "
                "was removed",
                untouched="nothing was changed",
                facts={"argv": list(argv)},
            )
        stdout = container.logs(stdout=True, stderr=False)
        stderr = container.logs(stdout=False, stderr=True)
    except EngineError as exc:
        raise EnvironmentUnreachable(
            f"the engine failed while `{shown}` ran in {image}: {exc}",
            untouched="nothing was changed",
        ) from None
    finally:
        with suppress(EngineError):
            container.remove(force=True, volumes=True)
    if len(stdout) + len(stderr) > MAX_OUTPUT_BYTES:
        raise CheckFailed(
            f"`{shown}` in {image} printed more than {MAX_OUTPUT_BYTES // 1024 // 1024} MiB",
            untouched="nothing was changed",
            facts={"argv": list(argv)},
        )
    return Ran(
        tuple(argv), code, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")
    )


def failure_of(ran: Ran, image: str, what: str) -> CheckFailed | UsageError:
    """The error of an Alembic command that exited non-zero."""
    line = ran.last_line()
    said = ran.stderr + ran.stdout  # Alembic prints its FAILED line on either, by version
    if "No config file" in said or "No 'script_location' key" in said:
        return UsageError(
            f"Alembic in {image} found no configuration: {line}",
            untouched="nothing was changed",
            hint="set release.alembic_command (or project.migration_command's -c) to the "
            "alembic.ini inside the image",
            facts={"argv": list(ran.argv), "stderr": ran.stderr[-4000:]},
        )
    return CheckFailed(
        f"{what} failed in {image} (exit {ran.exit_code}): {line}",
        untouched="nothing was changed",
        hint=f"run `{' '.join(ran.argv)}` in the image to see the whole error",
        facts={"argv": list(ran.argv), "stderr": ran.stderr[-4000:]},
    )


_HEAD_RE = re.compile(r"^(\S+)\s(?:.*\s)?\(head\)(?:\s.*)?$")


def parse_heads(stdout: str) -> tuple[str, ...]:
    """The revisions of `alembic heads`' output ("0002 (head)", "ab12 (branch) (head)"); lines
    of another shape (something a migration printed at import) are not heads."""
    heads = (m.group(1) for m in map(_HEAD_RE.match, stdout.splitlines()) if m)
    return tuple(dict.fromkeys(heads))


def image_heads(
    engine: Engine,
    image: str,
    base: Sequence[str],
    *,
    environment: Sequence[str],
    limits: RenderLimits,
) -> tuple[str, ...]:
    """The heads of the migrations `image` ships (`alembic heads` in it)."""
    ran = run_in_image(engine, image, alembic.heads(base), environment=environment, limits=limits)
    if ran.exit_code != 0:
        raise failure_of(ran, image, "`alembic heads`")
    heads = parse_heads(ran.stdout)
    if not heads:
        raise CheckFailed(
            f"`alembic heads` in {image} named no head"
            + (f" (it printed: {ran.stdout.strip()[:120]!r})" if ran.stdout.strip() else "")
            + ": a migration or env.py ended the process early, or there are no migrations",
            untouched="nothing was changed",
            facts={"argv": list(ran.argv), "stdout": ran.stdout[-2000:]},
        )
    return heads


#: PostgreSQL's SQL commands (the reference's "SQL Commands" list): every statement of the
#: offline output starts with one of them.
SQL_COMMANDS = frozenset((
    "ABORT", "ALTER", "ANALYZE", "BEGIN", "CALL", "CHECKPOINT", "CLOSE", "CLUSTER", "COMMENT",
    "COMMIT", "COPY", "CREATE", "DEALLOCATE", "DECLARE", "DELETE", "DISCARD", "DO", "DROP", "END",
    "EXECUTE", "EXPLAIN", "FETCH", "GRANT", "IMPORT", "INSERT", "LISTEN", "LOAD", "LOCK", "MERGE",
    "MOVE", "NOTIFY", "PREPARE", "REASSIGN", "REFRESH", "REINDEX", "RELEASE", "RESET", "REVOKE",
    "ROLLBACK", "SAVEPOINT", "SECURITY", "SELECT", "SET", "SHOW", "START", "TABLE", "TRUNCATE",
    "UNLISTEN", "UPDATE", "VACUUM", "VALUES", "WITH",
))  # fmt: skip


def statement_starts(sql: str) -> list[tuple[int, str]]:
    """(line number, text) of the first line of every statement, as the lint splits them
    (`sql_lint.split_statements`: at `;` outside quotes, dollar-quoted bodies and comments;
    comment lines before a statement skipped). A text after the last `;` counts as a statement
    too."""
    return [(s.line, s.sql.split("\n", 1)[0].strip()) for s in split_statements(sql)]


_BOOKKEEPING_RE = r"version_num\s*=\s*'{rev}'|VALUES\s*\(\s*'{rev}'\s*\)"


def check_sql(sql: str, image: str, head: str) -> None:
    """Refuse output that is not the whole offline SQL up to `head`.

    :raises CheckFailed: a statement that does not start with an SQL command (something a
        migration or env.py printed to standard output), or no bookkeeping of `head` (the
        process ended early: `sys.exit(0)` at import or in a migration).
    """
    for line, text in statement_starts(sql):
        word = re.match(r"\(*\s*([A-Za-z]+)", text)
        if not word or word.group(1).upper() not in SQL_COMMANDS:
            raise CheckFailed(
                f"line {line} of the offline SQL rendered in {image} is not SQL: {text[:80]!r}; "
                "a migration or env.py prints to standard output, which carries the SQL",
                untouched="nothing was changed",
                hint="print to sys.stderr or use logging in migrations and env.py",
                facts={"line": line, "text": text[:400]},
            )
    if not re.search(_BOOKKEEPING_RE.format(rev=re.escape(head)), sql, re.IGNORECASE):
        raise CheckFailed(
            f"the offline SQL rendered in {image} stops before revision {head}: a migration or "
            "env.py ended Alembic early (sys.exit?), or env.py does not run the migrations "
            "offline",
            untouched="nothing was changed",
            hint="make env.py's run_migrations_offline() run context.run_migrations(), and let "
            "migrations return instead of exiting",
            facts={"head": head, "sql_tail": sql[-2000:]},
        )


def render_sql(
    engine: Engine,
    image: str,
    base: Sequence[str],
    *,
    from_revision: str | None,
    to_revision: str,
    environment: Sequence[str],
    limits: RenderLimits,
) -> str:
    """The SQL of `alembic upgrade FROM:TO --sql` in `image`, checked whole (`check_sql`)."""
    argv = alembic.offline_upgrade(base, from_revision, to_revision)
    ran = run_in_image(engine, image, argv, environment=environment, limits=limits)
    if ran.exit_code != 0:
        raise failure_of(ran, image, "rendering the migrations' SQL offline")
    check_sql(ran.stdout, image, to_revision)
    return ran.stdout
