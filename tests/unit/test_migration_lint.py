"""The offline migration lint: rules, revisions, acknowledgements, expand-only classification.

The SQL below has the shape of Alembic's offline output (`alembic upgrade A:B --sql`) for
PostgreSQL, as rbac-api's env.py renders it.
"""

from __future__ import annotations

from deploytools.sql_lint import LintResult, acknowledgements, lint_sql, split_statements

PREAMBLE = """BEGIN;

SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

SELECT pg_advisory_xact_lock(7215190001);

"""
FILES = {"0003": "migrations/versions/0003_change.py", "0004": "migrations/versions/0004_more.py"}


def lint(
    body: str, *, preamble: str = PREAMBLE, sources: dict[str, str] | None = None
) -> LintResult:
    sql = (
        preamble
        + "-- Running upgrade 0002 -> 0003\n\n"
        + body
        + ";\n\nUPDATE alembic_version SET version_num='0003' "
        + "WHERE alembic_version.version_num = '0002';"
        + "\n\nCOMMIT;\n\n"
    )
    return lint_sql(
        sql,
        migration_sources=sources or {},
        migration_files=FILES,
        from_revision="0002",
        to_revision="0003",
    )


def rules(result: LintResult) -> list[str]:
    return [f.rule for f in result.findings]


def test_statements_belong_to_their_revision() -> None:
    sql = (
        PREAMBLE
        + "-- Running upgrade 0002 -> 0003\n\nALTER TABLE users ADD COLUMN a TEXT;\n\n"
        + "-- Running upgrade 0003 -> 0004\n\nALTER TABLE users ADD COLUMN b TEXT;\n\nCOMMIT;\n"
    )
    statements = split_statements(sql)
    assert [(s.revision, s.sql) for s in statements][-3:] == [
        ("0003", "ALTER TABLE users ADD COLUMN a TEXT"),
        ("0004", "ALTER TABLE users ADD COLUMN b TEXT"),
        ("0004", "COMMIT"),
    ]


def test_an_additive_release_is_clean_and_expand_only() -> None:
    result = lint(
        "CREATE TABLE audit (\n    id BIGSERIAL NOT NULL, \n    PRIMARY KEY (id)\n);\n\n"
        "CREATE INDEX ix_audit_id ON audit (id);\n\n"
        "ALTER TABLE users ADD COLUMN nickname VARCHAR(64);\n\n"
        "ALTER TABLE users ADD COLUMN active BOOLEAN DEFAULT true NOT NULL;\n\n"
        "COMMIT;\n\nSET lock_timeout = '5s';\n\n"
        "CREATE INDEX CONCURRENTLY ix_users_nickname ON users (nickname);\n\nBEGIN;\n\n"
        "ALTER TABLE users ADD CONSTRAINT fk_x FOREIGN KEY(role_id) REFERENCES roles (id) NOT VALID"
    )
    assert result.findings == ()
    assert result.expand_only
    assert result.revisions == ("0003",)


def test_not_null_column_without_default() -> None:
    result = lint("ALTER TABLE users ADD COLUMN email VARCHAR(255) NOT NULL")
    assert rules(result) == ["add-not-null-column"]
    finding = result.findings[0]
    assert finding.revision == "0003"
    assert finding.migration == "0003_change.py"
    assert finding.statement == "ALTER TABLE users ADD COLUMN email VARCHAR(255) NOT NULL"
    assert "0003_change.py (0003): add-not-null-column" in finding.describe()
    assert not result.expand_only
    assert result.failing == result.findings


def test_each_rule() -> None:
    cases = [
        ("CREATE INDEX ix_users_name ON users (username)", "create-index-not-concurrently"),
        ("CREATE UNIQUE INDEX ix_u ON users (username)", "create-index-not-concurrently"),
        (
            "ALTER TABLE documents ADD CONSTRAINT fk_owner FOREIGN KEY(owner_id) REFERENCES users",
            "constraint-without-not-valid",
        ),
        (
            "ALTER TABLE users ADD CONSTRAINT ck_name CHECK (length(username) > 2)",
            "constraint-without-not-valid",
        ),
        ("ALTER TABLE users RENAME username TO login", "rename-column"),
        ("ALTER TABLE users RENAME COLUMN username TO login", "rename-column"),
        ("ALTER TABLE users RENAME TO accounts", "rename-table"),
        ("ALTER TABLE users DROP COLUMN is_active", "drop-column"),
        ("DROP TABLE documents", "drop-table"),
        ("ALTER TABLE users ALTER COLUMN username TYPE VARCHAR(128)", "alter-column-type"),
        ("ALTER TABLE users ALTER COLUMN username SET NOT NULL", "set-not-null"),
    ]
    for statement, rule in cases:
        result = lint(statement)
        assert rules(result) == [rule], statement
        assert not result.expand_only, statement


def test_indexes_and_constraints_on_a_table_of_the_same_release_are_fine() -> None:
    result = lint(
        "CREATE TABLE audit (\n    id BIGSERIAL NOT NULL, \n    user_id INTEGER\n);\n\n"
        "CREATE INDEX ix_audit_user ON audit (user_id);\n\n"
        "ALTER TABLE audit ADD CONSTRAINT fk_user FOREIGN KEY(user_id) REFERENCES users (id)"
    )
    assert result.findings == ()
    assert result.expand_only


def test_no_lock_timeout_is_a_finding_once_per_migration() -> None:
    result = lint(
        "ALTER TABLE users ADD COLUMN a TEXT;\n\nALTER TABLE users ADD COLUMN b TEXT",
        preamble="BEGIN;\n\n",
    )
    assert rules(result) == ["no-lock-timeout"]
    assert result.findings[0].statement == "ALTER TABLE users ADD COLUMN a TEXT"


def test_set_local_lock_timeout_ends_with_its_transaction() -> None:
    sql = (
        "BEGIN;\n\nSET LOCAL lock_timeout = '5s';\n\nCOMMIT;\n\nBEGIN;\n\n"
        "-- Running upgrade 0002 -> 0003\n\nALTER TABLE users ADD COLUMN a TEXT;\n\nCOMMIT;\n"
    )
    result = lint_sql(sql, migration_sources={}, migration_files=FILES)
    assert rules(result) == ["no-lock-timeout"]


def test_a_session_lock_timeout_lasts() -> None:
    result = lint(
        "ALTER TABLE users ADD COLUMN a TEXT", preamble="SET lock_timeout = '3s';\n\nBEGIN;\n\n"
    )
    assert result.findings == ()


def test_an_acknowledged_finding_is_shown_not_failing() -> None:
    source = (
        '"""Add email."""\n'
        "# deploytools: allow add-not-null-column users is empty in every environment\n"
        "revision = '0003'\n"
    )
    result = lint(
        "ALTER TABLE users ADD COLUMN email VARCHAR(255) NOT NULL", sources={"0003": source}
    )
    assert rules(result) == ["add-not-null-column"]
    assert result.failing == ()
    assert result.acknowledged[0].reason == "users is empty in every environment"
    assert "[acknowledged: users is empty in every environment]" in result.findings[0].describe()
    # acknowledged is not additive: the old release still breaks
    assert not result.expand_only


def test_an_acknowledgement_without_a_reason_does_not_count() -> None:
    source = "# deploytools: allow add-not-null-column\nrevision = '0003'\n"
    assert acknowledgements(source) == {"add-not-null-column": ""}
    result = lint(
        "ALTER TABLE users ADD COLUMN email VARCHAR(255) NOT NULL", sources={"0003": source}
    )
    assert len(result.failing) == 1


def test_an_acknowledgement_covers_only_its_rule_and_its_migration() -> None:
    source = "# deploytools: allow drop-column the column was unused since 1.14\n"
    result = lint(
        "ALTER TABLE users ADD COLUMN email VARCHAR(255) NOT NULL", sources={"0003": source}
    )
    assert len(result.failing) == 1
    other = lint("ALTER TABLE users DROP COLUMN x", sources={"0004": source})
    assert len(other.failing) == 1


def test_concurrently_inside_a_transaction_is_refused_by_postgres() -> None:
    result = lint("CREATE INDEX CONCURRENTLY ix_users_name ON users (username)")
    assert rules(result) == ["concurrently-in-transaction"]
    assert result.expand_only  # additive all the same


def test_concurrently_in_an_autocommit_block_needs_its_own_lock_timeout() -> None:
    result = lint(
        "COMMIT;\n\nCREATE INDEX CONCURRENTLY ix_users_name ON users (username);\n\nBEGIN"
    )
    assert rules(result) == ["no-lock-timeout"]
