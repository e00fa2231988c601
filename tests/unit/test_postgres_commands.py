"""The argv and SQL of deploytools.commands.postgres, exactly."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

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


def test_pg_dump_takes_a_compression_level() -> None:
    assert "--compress=1" in pg.pg_dump("u", "d", compress=1)
    assert not [a for a in pg.pg_dump("u", "d") if a.startswith("--compress")]


def test_dump_and_restore_runs_both_programs_on_one_stream() -> None:
    argv = pg.dump_and_restore("rbac", "rbac", "rbac__dtverify_1", snapshot="0003-1")
    assert argv[:2] == ["sh", "-c"]
    script = argv[2]
    dump = shlex.join(pg.pg_dump("rbac", "rbac", snapshot="0003-1", compress=1))
    restore = shlex.join(pg.pg_restore("rbac", "rbac__dtverify_1"))
    assert dump in script
    assert f'{restore} < "$work/archive"' in script
    assert 'tee "$work/archive"' in script


# The script itself, run by sh with stand-ins for pg_dump and pg_restore: its exit code must name
# the side that failed, and stdout must carry the whole archive only when both succeeded.


def _fake(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _run_script(tmp_path: Path, *, dump: str, restore: str) -> subprocess.CompletedProcess[bytes]:
    _fake(tmp_path, "pg_dump", dump)
    _fake(tmp_path, "pg_restore", restore)
    argv = pg.dump_and_restore("u", "db", "scratch", compress=None)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)


#: 4 MB of archive, more than any pipe buffers, so the two sides really run side by side.
DUMP_4MB = "head -c 4194304 /dev/zero | tr '\\0' 'x'\n"
RESTORE_ALL = 'wc -c > "$TMPDIR_OUT/restored"\n'


def test_script_streams_the_whole_archive_to_both_sides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("TMPDIR_OUT", str(out))
    done = _run_script(tmp_path, dump=DUMP_4MB, restore=RESTORE_ALL)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"x" * 4194304
    assert (out / "restored").read_text().strip() == "4194304"


def test_script_says_the_restore_failed_and_cuts_the_dump(tmp_path: Path) -> None:
    restore = "head -c 1000 > /dev/null\necho 'pg_restore: error: COPY failed' >&2\nexit 1\n"
    dump = "i=0\nwhile [ $i -lt 10000 ]; do head -c 65536 /dev/zero || exit; i=$((i+1)); done\n"
    done = _run_script(tmp_path, dump=dump, restore=restore)
    assert done.returncode == pg.RESTORE_FAILED
    assert done.stderr.decode().strip().splitlines()[-1] == "pg_restore: error: COPY failed"
    assert len(done.stdout) < 10000 * 65536  # the dump did not run to its end


def test_script_says_the_dump_failed(tmp_path: Path) -> None:
    dump = "head -c 100000 /dev/zero\necho 'pg_dump: error: connection lost' >&2\nexit 1\n"
    done = _run_script(tmp_path, dump=dump, restore="cat > /dev/null\nexit 1\n")
    assert done.returncode == pg.DUMP_FAILED
    assert done.stderr.decode().strip().splitlines()[-1] == "pg_dump: error: connection lost"


def test_script_refuses_a_restore_that_stopped_reading_early(tmp_path: Path) -> None:
    # pg_restore exiting 0 without reading the whole stream: the stored file may be cut too.
    done = _run_script(tmp_path, dump=DUMP_4MB, restore="head -c 1000 > /dev/null\nexit 0\n")
    assert done.returncode == pg.STREAM_CUT
    assert "stream was cut" in done.stderr.decode()
