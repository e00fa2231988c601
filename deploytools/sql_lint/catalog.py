"""The rules of the SQL lint, each with what it means and whether it keeps a release from being
expand-only. Each names an operation that holds a lock long enough to stop the service
(PostgreSQL's "Explicit Locking" table and the lock level of each ALTER TABLE form) or that
breaks the release still running beside the new schema."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    name: str
    message: str
    #: A statement that breaks it keeps the release from being expand-only.
    blocks_expand: bool = True


_RULES = (
    Rule(
        "add-not-null-column",
        "adds a NOT NULL column without a DEFAULT (the old release's INSERTs fail; older "
        "PostgreSQL rewrites the table)",
    ),
    Rule(
        "add-column-volatile-default",
        "adds a column with a volatile DEFAULT or a STORED generated column (PostgreSQL "
        "rewrites the whole table under an ACCESS EXCLUSIVE lock; add it nullable, then "
        "backfill in batches)",
    ),
    Rule(
        "add-serial-column",
        "adds a serial or identity column (every existing row gets a value: a table rewrite "
        "under an ACCESS EXCLUSIVE lock)",
    ),
    Rule(
        "add-column-unique",
        "adds a column with UNIQUE or PRIMARY KEY (its index is built under an ACCESS "
        "EXCLUSIVE lock; CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... USING INDEX)",
    ),
    Rule(
        "add-unique-constraint",
        "adds a UNIQUE or EXCLUDE constraint (its index is built under an ACCESS EXCLUSIVE lock; "
        "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE USING INDEX)",
    ),
    Rule(
        "add-primary-key",
        "adds a PRIMARY KEY (its index is built, and NOT NULL checked, under an ACCESS "
        "EXCLUSIVE lock; CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... PRIMARY KEY "
        "USING INDEX)",
    ),
    Rule(
        "set-not-null",
        "sets NOT NULL on an existing column (scans the table under an exclusive lock; the old "
        "release may still write NULL; a validated CHECK (col IS NOT NULL) lets PostgreSQL skip "
        "the scan)",
    ),
    Rule(
        "create-index-not-concurrently",
        "creates an index without CONCURRENTLY (blocks writes for the whole build)",
    ),
    Rule(
        "drop-index-not-concurrently",
        "drops an index without CONCURRENTLY (an ACCESS EXCLUSIVE lock on its table, queued "
        "behind every running query)",
    ),
    Rule(
        "reindex-not-concurrently",
        "REINDEX without CONCURRENTLY (blocks writes, and reads through the index, for the "
        "whole rebuild)",
    ),
    Rule(
        "constraint-without-not-valid",
        "adds a FOREIGN KEY or CHECK constraint without NOT VALID (validates every row under lock)",
    ),
    Rule(
        "validate-in-same-transaction",
        "validates a constraint in the transaction that added it NOT VALID (the ADD's ACCESS "
        "EXCLUSIVE lock is held for the whole validation scan; VALIDATE in a transaction of "
        "its own)",
    ),
    Rule("rename-column", "renames a column (the old release still uses the old name)"),
    Rule("rename-table", "renames a table (the old release still uses the old name)"),
    Rule("drop-column", "drops a column (the old release may still read or write it)"),
    Rule("drop-table", "drops a table (the old release may still use it)"),
    Rule(
        "alter-column-type",
        "changes a column's type (rewrites the table under an exclusive lock; widening a "
        "varchar, numeric or varbit, or varchar to text, does not, but only a known former "
        "type shows it is one)",
    ),
    Rule(
        "rewrite-table",
        "SET TABLESPACE, SET LOGGED/UNLOGGED or SET ACCESS METHOD (rewrites the whole table "
        "under an ACCESS EXCLUSIVE lock)",
    ),
    Rule(
        "truncate",
        "TRUNCATE (an ACCESS EXCLUSIVE lock, and every row the running release reads is gone)",
    ),
    Rule(
        "whole-table-write",
        "UPDATE or DELETE of every row, a backfill inside the migration (holds every row's "
        "lock, and each lock the transaction took before, until it commits; backfill in "
        "batches outside the DDL transaction)",
    ),
    Rule("cluster", "CLUSTER (rewrites the table under an ACCESS EXCLUSIVE lock)"),
    Rule("vacuum-full", "VACUUM FULL (rewrites the table under an ACCESS EXCLUSIVE lock)"),
    Rule(
        "lock-table",
        "LOCK TABLE in a mode that blocks writes (ACCESS EXCLUSIVE by default) until the "
        "transaction ends",
    ),
    Rule(
        "refresh-matview-not-concurrently",
        "REFRESH MATERIALIZED VIEW without CONCURRENTLY (every read of the view waits)",
    ),
    Rule(
        "no-lock-timeout",
        "runs DDL without a lock_timeout (waits behind live traffic and queues every request "
        "behind itself)",
        blocks_expand=False,
    ),
    Rule(
        "concurrently-in-transaction",
        "CONCURRENTLY inside a transaction (PostgreSQL refuses it; use "
        "op.get_context().autocommit_block())",
        blocks_expand=False,
    ),
)

RULE_OF: Mapping[str, Rule] = {r.name: r for r in _RULES}
#: rule -> what it means, in the order the documentation lists them.
RULES: Mapping[str, str] = {r.name: r.message for r in _RULES}
