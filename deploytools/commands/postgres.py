"""Argv and SQL for PostgreSQL's client programs (psql, pg_dump, pg_restore): data, no I/O.

They run inside the database container (`docker exec`), over its local socket, as the
container's own POSTGRES_USER: no port is published and no password travels.
"""

from __future__ import annotations

import shlex

#: The directory of the server's local socket in the official image (and ours).
SOCKET_DIR = "/var/run/postgresql"

#: Exact row counts of every user table, one "schema.table<TAB>count" line each. query_to_xml
#: runs a count(*) per table inside one statement, so one psql call is enough.
ROW_COUNTS_SQL = (
    "SELECT table_schema || '.' || table_name, "
    "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', "
    "table_schema, table_name), false, true, '')))[1]::text "
    "FROM information_schema.tables "
    "WHERE table_type = 'BASE TABLE' "
    "AND table_schema NOT IN ('pg_catalog', 'information_schema') "
    "ORDER BY 1"
)

#: The Alembic revision, or nothing when the table does not exist (a database never migrated).
# Two statements: PostgreSQL resolves every table a statement names before running it, so one
# statement naming alembic_version fails on a database never migrated, whatever its CASE says.
ALEMBIC_TABLE_SQL = "SELECT to_regclass('public.alembic_version') IS NOT NULL"
REVISION_SQL = (
    "SELECT coalesce(string_agg(version_num, ',' ORDER BY version_num), '') "
    "FROM public.alembic_version"
)

DATABASE_SIZE_SQL = "SELECT pg_database_size(current_database())"


def quote_ident(name: str) -> str:
    """`name` as an SQL identifier, quoted the way PostgreSQL's quote_ident does."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _psql_connection(user: str, database: str, *, quiet: bool = False) -> list[str]:
    """psql over the local socket, unaligned and tuples only, stopping at the first error.

    -X skips ~/.psqlrc so that nobody's settings change the output we parse.
    """
    return [
        "psql",
        "-X",
        *(["--quiet"] if quiet else []),
        "--no-password",
        "-h",
        SOCKET_DIR,
        "-U",
        user,
        "-d",
        database,
        "-v",
        "ON_ERROR_STOP=1",
        "--no-align",
        "--tuples-only",
    ]


def psql(user: str, database: str, sql: str) -> list[str]:
    """One SQL statement; unaligned, tab-separated, tuples only; stops at the first error."""
    return [*_psql_connection(user, database), "--field-separator=\t", "-c", sql]


def psql_session(user: str, database: str) -> list[str]:
    """psql reading statements from stdin, quietly: for a session kept open (a snapshot)."""
    return _psql_connection(user, database, quiet=True)


#: Sent to a psql session: opens a repeatable-read transaction and prints its snapshot id.
EXPORT_SNAPSHOT_SQL = "BEGIN ISOLATION LEVEL REPEATABLE READ;\nSELECT pg_export_snapshot();\n"


def psql_in_snapshot(user: str, database: str, snapshot: str, sql: str) -> list[str]:
    """One query run inside an exported snapshot (so it sees what pg_dump --snapshot sees)."""
    argv = psql(user, database, sql)[:-2]
    return [
        *argv,
        "--quiet",
        "-c",
        "BEGIN ISOLATION LEVEL REPEATABLE READ",
        "-c",
        f"SET TRANSACTION SNAPSHOT {quote_literal(snapshot)}",
        "-c",
        sql,
        "-c",
        "COMMIT",
    ]


#: zlib level of our dumps. pg_dump's default (6) spends most of a dump's time compressing; on
#: the 1 GB benchmark level 1 makes the dump several seconds faster for a file a few percent
#: larger, and restores decompress it as fast (benchmarks/RESULTS.md, "Verified backups").
DUMP_COMPRESSION = 1


def pg_dump(
    user: str, database: str, *, snapshot: str | None = None, compress: int | None = None
) -> list[str]:
    """The whole database in custom format on stdout (compressed, restorable table by table);
    `compress`: zlib level 0-9 (None: pg_dump's default)."""
    return [
        "pg_dump",
        "--no-password",
        "-h",
        SOCKET_DIR,
        "-U",
        user,
        "-d",
        database,
        "--format=custom",
        *([f"--compress={compress}"] if compress is not None else []),
        *([f"--snapshot={snapshot}"] if snapshot else []),
    ]


def pg_dump_version() -> list[str]:
    return ["pg_dump", "--version"]


def pg_restore_list(path: str) -> list[str]:
    """Reads a custom-format archive's table of contents: fails when the archive is unreadable."""
    return ["pg_restore", "--list", path]


def pg_restore(user: str, database: str) -> list[str]:
    """Restores a custom-format archive read from stdin into `database`, stopping at the first
    error (a partial restore must fail loudly, never look complete)."""
    return [
        "pg_restore",
        "--no-password",
        "-h",
        SOCKET_DIR,
        "-U",
        user,
        "-d",
        database,
        "--exit-on-error",
        "--no-owner",
    ]


#: Exit codes of dump_and_restore's script, each naming the side that failed.
DUMP_FAILED = 10
RESTORE_FAILED = 11
STREAM_CUT = 12

#: One pass of a verified backup, run inside the database container: pg_dump's stdout goes to
#: stdout (deploytools streams it into the store) and, through a FIFO, at the same time into
#: pg_restore loading the scratch database. tee stops when either side stops reading, so a
#: failing restore cuts the dump short instead of letting it run on. pg_restore's messages are
#: held back and printed only when it failed, so the last line of stderr names the failure.
_DUMP_AND_RESTORE = """\
work=$(mktemp -d) || exit {cut}
trap 'rm -rf "$work"' EXIT
mkfifo "$work/archive" || exit {cut}
{restore} < "$work/archive" 2> "$work/restore.err" &
restoring=$!
{{ {dump}; echo $? > "$work/dump.rc"; }} | tee "$work/archive"
tee_rc=$?
wait "$restoring"
restore_rc=$?
dump_rc=$(cat "$work/dump.rc" 2>/dev/null || echo 255)
# 141: pg_dump ended by SIGPIPE, because the other side stopped reading first.
if [ "$dump_rc" -ne 0 ] && [ "$dump_rc" -ne 141 ]; then exit {dump_failed}; fi
if [ "$restore_rc" -ne 0 ]; then cat "$work/restore.err" >&2; exit {restore_failed}; fi
if [ "$dump_rc" -ne 0 ] || [ "$tee_rc" -ne 0 ]; then
    echo "the dump stream was cut (pg_dump exit $dump_rc, tee exit $tee_rc)" >&2
    exit {cut}
fi
"""


def dump_and_restore(
    user: str,
    database: str,
    scratch: str,
    *,
    snapshot: str | None = None,
    compress: int | None = DUMP_COMPRESSION,
) -> list[str]:
    """`pg_dump` of `database` to stdout and, from the same stream, `pg_restore` into the
    (created, empty) database `scratch`: one pass for a dump and its test restore.

    Exits 0 when both succeeded; DUMP_FAILED when pg_dump failed; RESTORE_FAILED when pg_restore
    did (its error last on stderr); STREAM_CUT when the stream to either side broke."""
    script = _DUMP_AND_RESTORE.format(
        dump=shlex.join(pg_dump(user, database, snapshot=snapshot, compress=compress)),
        restore=shlex.join(pg_restore(user, scratch)),
        cut=STREAM_CUT,
        dump_failed=DUMP_FAILED,
        restore_failed=RESTORE_FAILED,
    )
    return ["sh", "-c", script]


def create_database_sql(name: str) -> str:
    return f"CREATE DATABASE {quote_ident(name)}"


def drop_database_sql(name: str) -> str:
    # FORCE (PostgreSQL 13+) ends sessions still connected, e.g. a crashed verify's.
    return f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)"


def rename_database_sql(old: str, new: str) -> str:
    return f"ALTER DATABASE {quote_ident(old)} RENAME TO {quote_ident(new)}"


def unused_databases_sql(prefix: str) -> str:
    """Names of the databases starting with `prefix` that no session is connected to."""
    return (
        "SELECT datname FROM pg_database d WHERE starts_with(datname, "  # noqa: S608 - quoted
        + quote_literal(prefix)
        + ") AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname) "
        "ORDER BY 1"
    )


def databases_named_sql(prefix: str) -> str:
    """Names of the databases starting with `prefix` (literally: no LIKE wildcards)."""
    return (
        "SELECT datname FROM pg_database WHERE starts_with(datname, "  # noqa: S608 - quoted
        + quote_literal(prefix)
        + ") ORDER BY 1"
    )


def terminate_sessions_sql(database: str) -> str:
    """Ends every other session on `database`, so it can be renamed or dropped."""
    where = f"WHERE datname = {quote_literal(database)} AND pid <> pg_backend_pid()"
    # The name is quoted by quote_literal; it is ours (the service database), never user input.
    return "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity " + where  # noqa: S608


def parse_row_counts(output: str) -> dict[str, int]:
    """ROW_COUNTS_SQL's output -> {"schema.table": rows}."""
    counts: dict[str, int] = {}
    for line in output.splitlines():
        if not line.strip():
            continue
        table, _, count = line.partition("\t")
        counts[table] = int(count)
    return counts


def _from_addresses(addresses: list[str]) -> str:
    listed = ", ".join(f"{quote_literal(a)}::inet" for a in addresses)
    return f"FROM pg_stat_activity WHERE client_addr IN ({listed}) AND pid <> pg_backend_pid()"


def terminate_clients_sql(addresses: list[str]) -> str:
    """End the sessions of the clients at `addresses` (a cancelled migration's container):
    their open transactions roll back and their locks go."""
    return f"SELECT count(pg_terminate_backend(pid)) {_from_addresses(addresses)}"


def count_clients_sql(addresses: list[str]) -> str:
    """How many sessions the clients at `addresses` still have."""
    return f"SELECT count(*) {_from_addresses(addresses)}"
