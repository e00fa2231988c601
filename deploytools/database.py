"""The environment's PostgreSQL, reached by `docker exec` into its database container.

Credentials come from the container itself (POSTGRES_USER and POSTGRES_DB in its environment),
so deploy.toml does not repeat them; psql, pg_dump and pg_restore use the local socket.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from deploytools.commands import postgres as pg
from deploytools.engine.client import Container
from deploytools.engine.exec import DEFAULT_TIMEOUT_S, ExecResult, ExecStream
from deploytools.errors import EnvironmentUnreachable, ExternalCommandFailed
from deploytools.platforms import Platform


@dataclass
class Database:
    """One PostgreSQL database inside a running container."""

    container: Container
    user: str
    name: str
    environment: str

    @classmethod
    def of(cls, target: Platform) -> Database:
        """The environment's database (in the container of its running service, on whichever
        engine or node runs it); EnvironmentUnreachable when its container is not running."""
        service = target.config.project.database_service
        running = target.running(service)
        if not running:
            raise EnvironmentUnreachable(
                f'the database service "{service}" of environment {target.name} is not running',
                untouched="nothing was done to the database",
                hint=f"start it (`deploytools status --env {target.name}` shows what runs) "
                "and retry",
                facts={"environment": target.name, "service": service},
            )
        container = running[0]
        env = container.env
        user = env.get("POSTGRES_USER", "postgres")
        return cls(
            container=container,
            user=user,
            name=env.get("POSTGRES_DB", user),
            environment=target.name,
        )

    def _fail(self, what: str, result: ExecResult) -> ExternalCommandFailed:
        return ExternalCommandFailed(
            f"{what} failed in the database container {self.container.name} "
            f"(exit {result.exit_code}): {result.error_line()}",
            facts={"environment": self.environment, "stderr": result.stderr[-2000:].decode()},
        )

    def exec(
        self,
        argv: list[str],
        *,
        stdin: Iterable[bytes] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> ExecResult:
        return self.container.exec(argv, stdin=stdin, timeout_s=timeout_s)

    def query(
        self, sql: str, *, database: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> str:
        result = self.exec(pg.psql(self.user, database or self.name, sql), timeout_s=timeout_s)
        if result.exit_code != 0:
            raise self._fail("psql", result)
        return result.text()

    def revision(
        self, *, database: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> str | None:
        """The Alembic revision ("0002"), or None for a database never migrated."""
        if self.query(pg.ALEMBIC_TABLE_SQL, database=database, timeout_s=timeout_s).strip() != "t":
            return None
        return self.query(pg.REVISION_SQL, database=database, timeout_s=timeout_s).strip() or None

    def row_counts(
        self, *, database: str | None = None, snapshot: str | None = None
    ) -> dict[str, int]:
        """Exact rows per table; inside `snapshot` (see `snapshot()`) when given."""
        if snapshot is None:
            return pg.parse_row_counts(self.query(pg.ROW_COUNTS_SQL, database=database))
        argv = pg.psql_in_snapshot(self.user, database or self.name, snapshot, pg.ROW_COUNTS_SQL)
        result = self.exec(argv)
        if result.exit_code != 0:
            raise self._fail("psql", result)
        return pg.parse_row_counts(result.text())

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[str]:
        """Hold a repeatable-read transaction open and yield its exported snapshot id.

        pg_dump --snapshot and the row counts of the manifest then see the very same data, so a
        backup taken while the service writes still verifies: its counts are the dump's counts.
        """
        session = self.container.exec_attached(pg.psql_session(self.user, self.name))
        try:
            session.send(pg.EXPORT_SNAPSHOT_SQL.encode())
            out, err = b"", b""
            while b"\n" not in out:
                frame = session.read_frame()
                if frame is None:
                    break
                number, data = frame
                if number == 1:
                    out += data
                else:
                    err += data
            snapshot_id = out.decode().strip()
            if not snapshot_id:
                raise ExternalCommandFailed(
                    f"could not open a snapshot in {self.container.name}: "
                    + (err.decode("utf-8", "replace").strip() or "psql ended"),
                    untouched="nothing was written",
                )
            yield snapshot_id
        finally:
            with contextlib.suppress(OSError):
                session.send(b"COMMIT;\n")
                session.close_stdin()
                session.drain()
            session.close()

    def size_bytes(self) -> int:
        answer = self.query(pg.DATABASE_SIZE_SQL).strip()
        if not answer.isdigit():
            raise ExternalCommandFailed(
                f"psql in {self.container.name} answered {answer[:80]!r} for the size of "
                f"database {self.name}, not a number",
                untouched="nothing was written",
                hint="run the command again; if it persists, look at the database container's logs",
            )
        return int(answer)

    def pg_dump_version(self) -> str:
        result = self.exec(pg.pg_dump_version())
        if result.exit_code != 0:
            raise self._fail("pg_dump --version", result)
        return result.text().strip()

    def dump(self, *, snapshot: str | None = None) -> ExecStream:
        """pg_dump's custom-format output, streamed; call `result()` afterwards for the exit
        code."""
        argv = pg.pg_dump(self.user, self.name, snapshot=snapshot, compress=pg.DUMP_COMPRESSION)
        return self.container.exec_stream(argv)

    def dump_and_restore(self, scratch: str, *, snapshot: str | None = None) -> ExecStream:
        """Like `dump`, and the same stream is restored into the (empty) database `scratch` as
        it is written. The second item, called once the chunks are consumed, gives the exit code
        (pg.DUMP_FAILED, pg.RESTORE_FAILED, pg.STREAM_CUT) once both sides ended."""
        argv = pg.dump_and_restore(self.user, self.name, scratch, snapshot=snapshot)
        return self.container.exec_stream(argv)

    def reachable(self) -> bool:
        """Whether the server answers a query now (to tell a bad archive from a dead server)."""
        try:
            return self.query("SELECT 1", database="postgres").strip() == "1"
        except (ExternalCommandFailed, EnvironmentUnreachable):
            return False

    def create_database(self, name: str) -> None:
        self.query(pg.drop_database_sql(name), database="postgres")
        self.query(pg.create_database_sql(name), database="postgres")

    def drop_database(self, name: str) -> None:
        self.query(pg.drop_database_sql(name), database="postgres")

    def drop_unused(self, prefix: str) -> list[str]:
        """Drop the databases named `prefix`... that no session uses (scratch databases left
        by a run that lost its server midway); their names."""
        names = self.query(pg.unused_databases_sql(prefix), database="postgres").split()
        for name in names:
            self.drop_database(name)
        return names

    def restore_into(self, database: str, chunks: Iterable[bytes]) -> None:
        """pg_restore of a custom-format archive streamed from `chunks` into `database`."""
        result = self.exec(pg.pg_restore(self.user, database), stdin=chunks)
        if result.exit_code != 0:
            raise self._fail("pg_restore", result)

    def replace_with(self, scratch: str, *, keep_as: str) -> None:
        """Make `scratch` the service's database: the current one is renamed to `keep_as`
        (kept until the caller drops it), then `scratch` takes its name. Sessions on either are
        ended first; the app must be stopped by the caller."""
        self.query(pg.terminate_sessions_sql(self.name), database="postgres")
        self.query(pg.terminate_sessions_sql(scratch), database="postgres")
        self.query(pg.drop_database_sql(keep_as), database="postgres")
        self.query(pg.rename_database_sql(self.name, keep_as), database="postgres")
        try:
            self.query(pg.rename_database_sql(scratch, self.name), database="postgres")
        except ExternalCommandFailed:
            # Put the original back: the service must never be left without its database.
            self.query(pg.rename_database_sql(keep_as, self.name), database="postgres")
            raise
