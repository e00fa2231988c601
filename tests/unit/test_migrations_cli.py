"""`deploytools migrations lint FILE|-`: findings with rule, line and statement, the verdict,
--json, and the exit codes (0 clean, 1 an unacknowledged finding, 2 an unreadable file)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from deploytools.cli import cli

CLEAN = "SET lock_timeout = '5s';\nALTER TABLE users ADD COLUMN nickname text;\n"
BAD = (
    "SET lock_timeout = '5s';\n"
    "-- deploytools: allow truncate the table only holds a cache\n"
    "TRUNCATE sessions;\n"
    "CREATE INDEX users_email_idx\n    ON users (email);\n"
)


def invoke(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)


def write(tmp_path: Path, text: str, name: str = "0042.sql") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_clean_sql_exits_0_and_says_expand_only(tmp_path: Path) -> None:
    path = write(tmp_path, CLEAN)
    result = invoke("migrations", "lint", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{path}: 0 finding(s), 0 unacknowledged; expand-only"


def test_findings_print_rule_line_and_statement_and_exit_1(tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    result = invoke("migrations", "lint", str(path))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"{path}:3: truncate: TRUNCATE sessions [acknowledged: the table only holds a cache]"
    )
    assert (
        lines[1]
        == f"{path}:4: create-index-not-concurrently: CREATE INDEX users_email_idx ON users (email)"
    )
    assert lines[2].startswith("    creates an index without CONCURRENTLY")
    assert lines[3] == f"{path}: 2 finding(s), 1 unacknowledged; not expand-only"
    assert result.stderr.startswith(
        f"error: the lint of {path} found 1 unacknowledged finding(s): "
        "create-index-not-concurrently."
    )


def test_stdin_and_json(tmp_path: Path) -> None:
    result = invoke("migrations", "lint", "--json", "-", stdin=BAD)
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False
    lint = document["error"]["facts"]["lint"]
    assert lint["expand_only"] is False
    assert [(f["rule"], f["line"], f["acknowledged"]) for f in lint["findings"]] == [
        ("truncate", 3, True),
        ("create-index-not-concurrently", 4, False),
    ]
    assert lint["findings"][1]["statement"] == "CREATE INDEX users_email_idx\n    ON users (email)"
    assert lint["findings"][1]["migration"] == "stdin"
    clean = invoke("--json", "migrations", "lint", "-", stdin=CLEAN)
    assert clean.exit_code == 0
    assert json.loads(clean.stdout) == {
        "ok": True,
        "result": {"expand_only": True, "findings": [], "not_additive": [], "ok": True},
    }


def test_a_schema_file_clears_a_widening(tmp_path: Path) -> None:
    path = write(tmp_path, CLEAN + "ALTER TABLE users ALTER COLUMN name TYPE varchar(100);\n")
    assert invoke("migrations", "lint", str(path)).exit_code == 1
    schema = write(tmp_path, "CREATE TABLE users (name varchar(50));", "schema.sql")
    result = invoke("migrations", "lint", "--schema", str(schema), str(path))
    assert result.exit_code == 0, result.output


def test_unreadable_files_are_usage_errors(tmp_path: Path) -> None:
    missing = invoke("migrations", "lint", str(tmp_path / "nope.sql"))
    assert missing.exit_code == 2
    assert "nope.sql" in missing.stderr
    assert invoke("migrations", "lint", str(tmp_path)).exit_code == 2
    binary = tmp_path / "binary.sql"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    result = invoke("migrations", "lint", str(binary))
    assert result.exit_code == 2
    assert "cannot read" in result.stderr
    assert invoke("migrations", "lint").exit_code == 2


def test_help_names_the_rules_and_the_exit_codes() -> None:
    result = invoke("migrations", "lint", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "FILE (- for standard input)" in text
    assert "-- deploytools: allow truncate" in text
    assert "vacuum-full" in text and "whole-table-write" in text
    assert "Exits 0 when every finding is acknowledged (or none), 1 when one is not, 2" in text
