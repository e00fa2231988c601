"""What the lint knows of the database while it reads a migration, and a statement's verdict.

`Schema` is what the statements read so far taught: the tables this SQL creates (empty, unused
by the running release: no rule applies to them), the columns' types (to tell a widening from a
rewrite), the columns this SQL added (a backfill of them touches every row), and the constraints
added NOT VALID in the open transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Schema:
    """What the statements read so far taught the lint (see the module's docstring)."""

    new_tables: set[str] = field(default_factory=set)
    columns: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    added_columns: set[tuple[str, str]] = field(default_factory=set)
    #: (table, constraint) -> the column of its CHECK (col IS NOT NULL), or "".
    not_valid: dict[tuple[str, str], str] = field(default_factory=dict)
    #: Constraints added NOT VALID in the open transaction.
    pending: set[tuple[str, str]] = field(default_factory=set)
    #: Columns with a validated CHECK (col IS NOT NULL): SET NOT NULL skips its scan.
    proven_not_null: set[tuple[str, str]] = field(default_factory=set)
    #: Indexes created on new tables.
    new_indexes: set[str] = field(default_factory=set)
    in_transaction: bool = False

    def settle(self) -> None:
        """What a context (the schema before) taught becomes the existing database: its tables
        are no longer new."""
        self.new_tables.clear()
        self.added_columns.clear()
        self.new_indexes.clear()
        self.pending.clear()
        self.in_transaction = False


@dataclass(frozen=True)
class Verdict:
    rules: tuple[str, ...]
    additive: bool
