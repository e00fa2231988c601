"""The SQL lint's parts: the lexer and splitter, the rules' edges, acknowledgements in raw SQL,
lines, lock_timeout values, and what a schema given as context changes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploytools.errors import CheckFailed
from deploytools.sql_lint import (
    RULE_OF,
    RULES,
    lint_file,
    lint_sql,
    raise_if_failing,
    split_statements,
    summary,
)
from deploytools.sql_lint.statements import tokenize

TIMEOUT = "SET lock_timeout = '5s';\n"


def rules_of(sql: str, *, context: str = "") -> list[str]:
    return [f.rule for f in lint_file(TIMEOUT + sql, context_sql=context).findings]


# -- statements ---------------------------------------------------------------------------------


def test_semicolons_inside_quotes_comments_and_dollar_bodies_do_not_split() -> None:
    sql = (
        "COMMENT ON TABLE t IS 'a; b';\n"
        'CREATE TABLE "odd;name" (a int);\n'
        "/* one; /* nested; */ still; */ SELECT 1;\n"
        "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\n"
        "SELECT 2 -- trailing; comment\n;"
    )
    statements = split_statements(sql)
    assert [s.words[0] for s in statements] == ["COMMENT", "CREATE", "SELECT", "CREATE", "SELECT"]
    assert statements[0].sql == "COMMENT ON TABLE t IS 'a; b'"
    assert statements[1].words[2] == '"odd;name"'
    assert [s.line for s in statements] == [1, 2, 3, 4, 5]


def test_words_drop_comments_and_empty_strings() -> None:
    (statement,) = split_statements("alter table t add column c text /* NOT NULL */ default 'x y'")
    assert statement.code == "ALTER TABLE T ADD COLUMN C TEXT DEFAULT ''"
    assert "/* NOT NULL */" in statement.sql


def test_an_unterminated_string_or_comment_runs_to_the_end() -> None:
    assert [t.kind for t in tokenize("SELECT 'open")] == ["word", "string"]
    assert [t.kind for t in tokenize("SELECT /* open")] == ["word", "comment"]
    assert [s.code for s in split_statements("SELECT $x$ open")] == ["SELECT ''"]


def test_escape_strings_keep_their_backslashed_quote() -> None:
    (statement,) = split_statements(r"COMMENT ON TABLE t IS E'it\'s; fine'")
    assert statement.code == "COMMENT ON TABLE T IS ''"


# -- rules --------------------------------------------------------------------------------------


def test_every_rule_says_what_it_means() -> None:
    assert set(RULES) == set(RULE_OF)
    assert all(len(message) > 20 for message in RULES.values())
    assert not RULE_OF["no-lock-timeout"].blocks_expand
    assert RULE_OF["truncate"].blocks_expand


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("ALTER TABLE t ADD COLUMN c int DEFAULT NULL NOT NULL", ["add-not-null-column"]),
        ("ALTER TABLE t ADD c int NOT NULL DEFAULT 0", []),
        ("ALTER TABLE t ADD COLUMN c int DEFAULT nextval('s')", ["add-column-volatile-default"]),
        ("ALTER TABLE t ADD COLUMN c text DEFAULT 'x'::varchar(10)", []),
        ("ALTER TABLE t ADD COLUMN c timestamptz DEFAULT CURRENT_TIMESTAMP", []),
        (
            "ALTER TABLE t ADD COLUMN id serial PRIMARY KEY",
            ["add-serial-column", "add-primary-key"],
        ),
        ("ALTER TABLE t ADD COLUMN IF NOT EXISTS c text UNIQUE", ["add-column-unique"]),
        ("ALTER TABLE ONLY public.t ADD CONSTRAINT t_pk PRIMARY KEY USING INDEX t_idx", []),
        ("ALTER TABLE t DROP CONSTRAINT t_check", []),
        ("ALTER TABLE t ALTER COLUMN c DROP DEFAULT", []),
        ("ALTER TABLE t RENAME CONSTRAINT a TO b", []),
        ("DROP INDEX IF EXISTS a, b CASCADE", ["drop-index-not-concurrently"]),
        ("REINDEX (VERBOSE) TABLE t", ["reindex-not-concurrently"]),
        ("REINDEX (CONCURRENTLY) TABLE t", []),
        ("REINDEX (CONCURRENTLY false) TABLE t", ["reindex-not-concurrently"]),
        ("VACUUM (FULL false) t", []),
        ("TRUNCATE TABLE ONLY a, b RESTART IDENTITY", ["truncate"]),
        ("UPDATE t SET c = 1 WHERE true", ["whole-table-write"]),
        ("UPDATE t SET c = 1 WHERE (1 = 1)", ["whole-table-write"]),
        ("UPDATE t SET c = 1 WHERE c IS NULL", []),  # c was not added here: maybe a few rows
        ("DELETE FROM t WHERE id IN (SELECT id FROM u)", []),
        ("LOCK TABLE t IN ROW EXCLUSIVE MODE", []),
        ("LOCK t", ["lock-table"]),
        ("CLUSTER", ["cluster"]),
    ],
)
def test_rule_edges(sql: str, expected: list[str]) -> None:
    assert rules_of(sql) == expected


def test_nothing_applies_to_a_table_of_the_same_sql() -> None:
    sql = (
        'CREATE TABLE "Audit" (id int);\n'
        'TRUNCATE "Audit";\nUPDATE "Audit" SET id = 1;\nCLUSTER "Audit";\n'
        'CREATE INDEX audit_idx ON "Audit" (id);\nDROP INDEX audit_idx;\n'
        'ALTER TABLE "Audit" ADD COLUMN n bigserial, ALTER COLUMN id TYPE bigint;\n'
        'ALTER TABLE "Audit" RENAME TO "AuditLog";\n'
        'DROP TABLE "Audit";'
    )
    result = lint_file(TIMEOUT + sql)
    assert result.findings == ()
    assert not result.expand_only  # dropping, truncating, updating: not additive all the same


def test_quoted_names_keep_their_case() -> None:
    assert rules_of('CREATE TABLE "Audit" (id int);\nTRUNCATE audit') == ["truncate"]


def test_a_type_change_is_safe_only_when_the_former_type_is_known_to_widen() -> None:
    sql = "ALTER TABLE users ALTER COLUMN name TYPE varchar(100)"
    assert rules_of(sql) == ["alter-column-type"]
    assert rules_of(sql, context="CREATE TABLE users (name varchar(50));") == []
    assert rules_of(sql, context="CREATE TABLE users (name varchar(200));") == ["alter-column-type"]
    assert rules_of(sql, context="CREATE TABLE users (name integer);") == ["alter-column-type"]
    assert rules_of(sql + ' COLLATE "C"', context="CREATE TABLE users (name varchar(5));") == [
        "alter-column-type"
    ]
    # the former type, learnt from the same SQL
    assert rules_of("ALTER TABLE users ADD COLUMN note text;\n" + sql.replace("name", "note")) == [
        "alter-column-type"
    ]
    assert (
        rules_of(
            "ALTER TABLE users ADD COLUMN note varchar(10);\n"
            "ALTER TABLE users ALTER COLUMN note TYPE character varying"
        )
        == []
    )


def test_a_context_table_is_not_new() -> None:
    context = "CREATE TABLE users (id int);\nCREATE INDEX users_idx ON users (id);"
    assert rules_of("CREATE INDEX u2 ON users (id)", context=context) == [
        "create-index-not-concurrently"
    ]
    assert rules_of("DROP INDEX users_idx", context=context) == ["drop-index-not-concurrently"]


def test_validate_after_commit_is_safe_and_in_one_alembic_transaction_is_not() -> None:
    add = "ALTER TABLE t ADD CONSTRAINT c CHECK (n > 0) NOT VALID;\n"
    validate = "ALTER TABLE t VALIDATE CONSTRAINT c;\n"
    assert rules_of("BEGIN;\n" + add + "COMMIT;\nBEGIN;\n" + validate + "COMMIT;") == []
    assert rules_of(add + validate) == []  # autocommit: each statement its own transaction
    sql = (
        "BEGIN;\n" + TIMEOUT + "-- Running upgrade 0001 -> 0002\n\n" + add
        + "-- Running upgrade 0002 -> 0003\n\n" + validate + "COMMIT;\n"
    )  # fmt: skip
    result = lint_sql(sql, migration_sources={}, migration_files={})
    assert [(f.rule, f.revision) for f in result.findings] == [
        ("validate-in-same-transaction", "0003")
    ]


# -- lock_timeout, acknowledgements, lines ------------------------------------------------------


def test_a_zero_lock_timeout_is_none() -> None:
    result = lint_file("SET lock_timeout = 0;\nALTER TABLE t ADD COLUMN c text;")
    assert [f.rule for f in result.findings] == ["no-lock-timeout"]
    result = lint_file("SET LOCAL lock_timeout TO '2s';\nALTER TABLE t ADD COLUMN c text;")
    assert result.findings == ()


def test_raw_sql_acknowledges_with_a_sql_comment_and_findings_have_lines() -> None:
    sql = (
        TIMEOUT
        + "-- deploytools: allow truncate the table only holds a cache\n"
        + "TRUNCATE sessions;\n\n"
        + "ALTER TABLE users\n    DROP COLUMN legacy;\n"
    )
    result = lint_file(sql, name="0042.sql")
    assert [(f.rule, f.line, f.acknowledged) for f in result.findings] == [
        ("truncate", 3, True),
        ("drop-column", 5, False),
    ]
    assert result.findings[0].reason == "the table only holds a cache"
    assert result.findings[1].migration == "0042.sql"
    assert result.findings[1].revision == ""
    assert result.not_additive == (
        "line 3: TRUNCATE sessions",
        "line 5: ALTER TABLE users DROP COLUMN legacy",
    )
    data = summary(result)
    assert data["ok"] is False and data["expand_only"] is False
    assert data["findings"][1]["statement"] == "ALTER TABLE users\n    DROP COLUMN legacy"
    with pytest.raises(CheckFailed) as raised:
        raise_if_failing(result, name="0042.sql")
    assert "1 unacknowledged finding(s): drop-column" in raised.value.message
    assert raised.value.facts["lint"] == data


def test_clean_sql_passes() -> None:
    result = lint_file(TIMEOUT + "CREATE TABLE t (id int);")
    assert result.findings == () and result.expand_only
    raise_if_failing(result, name="x.sql")  # nothing raised


# -- arbitrary input ------------------------------------------------------------------------------

_PREFIXES = (
    "ALTER TABLE t", "ALTER TABLE t ADD", "ALTER TABLE t ADD CONSTRAINT c", "ALTER TABLE t ALTER",
    "CREATE TABLE t (", "CREATE INDEX", "DROP INDEX", "REINDEX (", "VACUUM (", "LOCK TABLE t IN",
    "UPDATE t SET c = 1 WHERE", "DELETE FROM", "TRUNCATE", "CLUSTER", "SET LOCAL", "BEGIN", "",
)  # fmt: skip
_WORDS = (
    "ADD", "COLUMN", "CONSTRAINT", "CHECK", "FOREIGN", "PRIMARY", "KEY", "UNIQUE", "USING",
    "INDEX", "NOT", "NULL", "VALID", "VALIDATE", "DEFAULT", "TYPE", "SET", "DROP", "RENAME", "TO",
    "CONCURRENTLY", "FULL", "IS", "WHERE", "GENERATED", "AS", "IDENTITY", "STORED", "(", ")", ",",
    ";", ".", "=", "::", "t", "c", "'x'", '"Q"', "1", "$$", "--", "/*", "*/", "\n",
)  # fmt: skip


@given(
    prefix=st.sampled_from(_PREFIXES),
    words=st.lists(st.sampled_from(_WORDS), max_size=10),
    noise=st.text(max_size=20),
)
@settings(max_examples=300, deadline=None)
def test_arbitrary_sql_gives_a_result_never_an_exception(
    prefix: str, words: list[str], noise: str
) -> None:
    sql = " ".join([prefix, *words, noise])
    result = lint_file(sql, context_sql=sql)
    assert all(f.rule in RULES for f in result.findings)


# The offline SQL of the reference service's 1.15.2 migration, as Alembic renders it (its env.py
# sets the timeouts): the release the demo takes to production must stay clean and expand-only.
REFERENCE_1_15_2 = """BEGIN;

SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

SELECT pg_advisory_xact_lock(7215190001);

-- Running upgrade 0001 -> 0002

CREATE TABLE role_assignment_audit (
    id BIGSERIAL NOT NULL, 
    user_id INTEGER NOT NULL, 
    role_name VARCHAR(32) NOT NULL, 
    action VARCHAR(16) NOT NULL, 
    actor_id INTEGER, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    PRIMARY KEY (id), 
    CONSTRAINT ck_role_assignment_audit_action CHECK (action IN ('assign', 'revoke'))
);

CREATE INDEX ix_role_assignment_audit_created_at ON role_assignment_audit (created_at);

UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001';

COMMIT;
"""  # noqa: W291 (Alembic's own trailing spaces)


def test_the_reference_release_stays_clean_and_expand_only() -> None:
    result = lint_sql(
        REFERENCE_1_15_2,
        migration_sources={},
        migration_files={"0002": "migrations/versions/0002_role_assignment_audit.py"},
        from_revision="0001",
        to_revision="0002",
    )
    assert result.findings == ()
    assert result.expand_only
    assert result.revisions == ("0002",)


WIDEN = '''"""Longer usernames."""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0003"


def upgrade() -> None:
    op.alter_column(
        "users", "username", existing_type=sa.VARCHAR(length=50), type_=sa.String(length=100)
    )
    op.alter_column(
        "orders", "amount", existing_type=postgresql.NUMERIC(10, 2), type_=sa.Numeric(12, 2)
    )
    op.alter_column(
        table_name="users", column_name="bio", existing_type=sa.String(), type_=sa.Text()
    )
    op.alter_column("users", "age", existing_type=sa.INTEGER(), type_=sa.BigInteger())
'''


def test_a_migrations_existing_type_tells_the_former_type() -> None:
    from deploytools.sql_lint.alembic_hints import former_types

    assert former_types(WIDEN) == {
        ("users", "username"): ("VARCHAR", "(", "50", ")"),
        ("orders", "amount"): ("NUMERIC", "(", "10", ",", "2", ")"),
        ("users", "bio"): ("VARCHAR",),
        ("users", "age"): ("INTEGER",),
    }
    assert former_types("def broken(:\n") == {}
    sql = (
        "BEGIN;\n\nSET LOCAL lock_timeout = '5s';\n\n-- Running upgrade 0002 -> 0003\n\n"
        "ALTER TABLE users ALTER COLUMN username TYPE VARCHAR(100);\n\n"
        "ALTER TABLE orders ALTER COLUMN amount TYPE NUMERIC(12, 2);\n\n"
        "ALTER TABLE users ALTER COLUMN bio TYPE TEXT;\n\n"
        "ALTER TABLE users ALTER COLUMN age TYPE BIGINT;\n\nCOMMIT;\n"
    )
    result = lint_sql(
        sql, migration_sources={"0003": WIDEN}, migration_files={"0003": "0003_widen.py"}
    )
    assert [(f.rule, f.statement) for f in result.findings] == [
        ("alter-column-type", "ALTER TABLE users ALTER COLUMN age TYPE BIGINT")
    ]
    # without the migration's source, every type change is a finding
    assert len(lint_sql(sql, migration_sources={}, migration_files={}).findings) == 4
