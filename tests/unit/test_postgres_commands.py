"""The argv and SQL of deploytools.commands.postgres, exactly."""

from __future__ import annotations

from deploytools.commands import postgres as pg


def test_psql_uses_the_local_socket_and_stops_at_the_first_error() -> None:
    assert pg.psql("rbac", "rbac", "SELECT 1") == [
        "psql",
        "-X",
        "--no-password",
        "-h",
        "/var/run/postgresql",
        "-U",
        "rbac",
        "-d",
        "rbac",
        "-v",
        "ON_ERROR_STOP=1",
        "--no-align",
        "--tuples-only",
        "--field-separator=\t",
        "-c",
        "SELECT 1",
    ]


def test_pg_dump_is_custom_format_and_takes_a_snapshot() -> None:
    assert pg.pg_dump("rbac", "rbac") == [
        "pg_dump",
        "--no-password",
        "-h",
        "/var/run/postgresql",
        "-U",
        "rbac",
        "-d",
        "rbac",
        "--format=custom",
    ]
    assert pg.pg_dump("u", "d", snapshot="00000003-1")[-1] == "--snapshot=00000003-1"


def test_pg_restore_reads_stdin_and_exits_on_error() -> None:
    argv = pg.pg_restore("rbac", "scratch")
    assert argv[0] == "pg_restore"
    assert "--exit-on-error" in argv
    assert argv[argv.index("-d") + 1] == "scratch"
    assert not [a for a in argv if a.startswith("/store")]  # no file: the archive comes on stdin
    assert pg.pg_restore_list("/store/x.dump") == ["pg_restore", "--list", "/store/x.dump"]


def test_query_in_snapshot_runs_inside_one_repeatable_read_transaction() -> None:
    argv = pg.psql_in_snapshot("rbac", "rbac", "0000-1", "SELECT 2")
    commands = [argv[i + 1] for i, a in enumerate(argv) if a == "-c"]
    assert commands == [
        "BEGIN ISOLATION LEVEL REPEATABLE READ",
        "SET TRANSACTION SNAPSHOT '0000-1'",
        "SELECT 2",
        "COMMIT",
    ]
    assert "--quiet" in argv


def test_identifiers_and_literals_are_quoted() -> None:
    assert pg.quote_ident('we"ird') == '"we""ird"'
    assert pg.quote_literal("o'neil") == "'o''neil'"
    assert pg.create_database_sql("rbac__dtverify_1") == 'CREATE DATABASE "rbac__dtverify_1"'
    assert pg.drop_database_sql("x") == 'DROP DATABASE IF EXISTS "x" WITH (FORCE)'
    assert pg.rename_database_sql("a", "b") == 'ALTER DATABASE "a" RENAME TO "b"'
    assert "datname = 'it''s'" in pg.terminate_sessions_sql("it's")


def test_row_counts_are_parsed_from_tab_separated_lines() -> None:
    output = "public.roles\t4\npublic.users\t12\n\n"
    assert pg.parse_row_counts(output) == {"public.roles": 4, "public.users": 12}
    assert pg.parse_row_counts("") == {}
