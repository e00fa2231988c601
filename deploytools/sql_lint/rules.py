"""The rules: what one statement locks or breaks, given what the lint knows of the schema.

Each rule names an operation that holds a lock long enough to stop the service (PostgreSQL's
"Explicit Locking" table and the lock level of each ALTER TABLE form) or that breaks the release
still running beside the new schema. Nothing here reads text: the rules read a statement's
`words` (see statements.py), so comments and strings never count.

`Schema` is what the statements read so far taught: the tables this SQL creates (empty, unused
by the running release: no rule applies to them), the columns' types (to tell a widening from a
rewrite), the columns this SQL added (a backfill of them touches every row), and the constraints
added NOT VALID in the open transaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from deploytools.sql_lint.statements import ident, split_top, top_level_index


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

_SERIAL_TYPES = {"SERIAL", "BIGSERIAL", "SMALLSERIAL", "SERIAL2", "SERIAL4", "SERIAL8"}
_COLUMN_CONSTRAINTS = {
    "NOT", "NULL", "DEFAULT", "CONSTRAINT", "CHECK", "UNIQUE", "PRIMARY", "REFERENCES",
    "GENERATED", "COLLATE", "COMPRESSION", "STORAGE",
}  # fmt: skip
_TABLE_CONSTRAINTS = {"CONSTRAINT", "CHECK", "FOREIGN", "UNIQUE", "PRIMARY", "EXCLUDE"}
#: Functions (and type names written like calls) whose value does not change row by row: a
#: DEFAULT of them is computed once and stored in the catalog (PostgreSQL 11 and later).
_NOT_VOLATILE = {
    "NOW", "TRANSACTION_TIMESTAMP", "STATEMENT_TIMESTAMP", "CURRENT_SETTING", "LOWER", "UPPER",
    "COALESCE", "NULLIF", "GREATEST", "LEAST", "CAST", "ARRAY", "ROW", "JSONB_BUILD_OBJECT",
    "JSON_BUILD_OBJECT", "JSONB_BUILD_ARRAY", "JSON_BUILD_ARRAY", "TO_JSONB", "MAKE_INTERVAL",
    "DATE_TRUNC", "TIMEZONE", "VARCHAR", "CHAR", "CHARACTER", "NUMERIC", "DECIMAL", "TIMESTAMP",
    "TIME", "INTERVAL", "BIT", "VARBIT", "FLOAT",
}  # fmt: skip
_TYPE_ALIASES = {
    "CHARACTER VARYING": "VARCHAR",
    "DECIMAL": "NUMERIC",
    "BIT VARYING": "VARBIT",
    "INT": "INTEGER",
    "INT4": "INTEGER",
    "INT8": "BIGINT",
    "INT2": "SMALLINT",
}
_BLOCKING_LOCK_MODES = {"", "ACCESS EXCLUSIVE", "EXCLUSIVE", "SHARE ROW EXCLUSIVE", "SHARE"}
_ADDITIVE_STARTS = (
    ("CREATE", "TABLE"), ("CREATE", "UNLOGGED", "TABLE"), ("CREATE", "SEQUENCE"),
    ("CREATE", "TYPE"), ("CREATE", "DOMAIN"), ("CREATE", "VIEW"),
    ("CREATE", "MATERIALIZED", "VIEW"), ("CREATE", "FUNCTION"), ("CREATE", "PROCEDURE"),
    ("CREATE", "EXTENSION"), ("CREATE", "SCHEMA"), ("COMMENT", "ON"), ("INSERT", "INTO"),
    ("ANALYZE",), ("GRANT",),
)  # fmt: skip


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


def transaction_edge(words: Sequence[str]) -> str | None:
    """ "begin" or "end" for a statement that opens or closes a transaction block."""
    first = words[0] if words else ""
    if first == "BEGIN" or (first == "START" and words[1:2] == ["TRANSACTION"]):
        return "begin"
    if first in ("COMMIT", "END", "ROLLBACK", "ABORT") and "PREPARED" not in words:
        return "end"
    return None


def _starts(words: Sequence[str], *prefix: str) -> bool:
    return tuple(words[: len(prefix)]) == prefix


def _name_at(words: Sequence[str], i: int) -> tuple[str, int]:
    """The (last part of the) qualified name at i, and the index after it."""
    if i >= len(words):
        return "", i
    name = words[i]
    i += 1
    while i + 1 < len(words) and words[i] == ".":
        name = words[i + 1]
        i += 2
    if i < len(words) and words[i] == "*":
        i += 1
    return ident(name), i


def _skip(words: Sequence[str], i: int, *optional: str) -> int:
    """Past any of the optional words (or phrases, space-separated) at i, in order."""
    for phrase in optional:
        parts = phrase.split()
        if list(words[i : i + len(parts)]) == parts:
            i += len(parts)
    return i


def judge(words: Sequence[str], schema: Schema) -> Verdict:
    """The rules one statement breaks (before acknowledgements) and whether it only adds;
    updates `schema` with what the statement teaches."""
    w = list(words)
    if _starts(w, "CREATE", "TABLE") or _starts(w, "CREATE", "UNLOGGED", "TABLE"):
        return _create_table(w, schema)
    if w[:1] == ["CREATE"] and "INDEX" in w[:4]:
        return _create_index(w, schema)
    if _starts(w, "ALTER", "TABLE"):
        return _alter_table(w, schema)
    if _starts(w, "DROP", "TABLE"):
        dropped = {_name_at(p, 0)[0] for p in split_top(w[_skip(w, 2, "IF EXISTS") :])}
        return Verdict(() if dropped <= schema.new_tables else ("drop-table",), False)
    if _starts(w, "DROP", "INDEX"):
        return _drop_index(w, schema)
    if w[:1] == ["REINDEX"]:
        return _reindex(w, schema)
    if w[:1] == ["TRUNCATE"]:
        emptied = _tables_of(w[_skip(w, 1, "TABLE") :])
        return Verdict(() if emptied <= schema.new_tables else ("truncate",), False)
    if w[:1] in (["UPDATE"], ["DELETE"]):
        return _write(w, schema)
    if w[:1] == ["CLUSTER"]:
        table, _ = _name_at(w, _skip(w, 1, "VERBOSE"))
        return Verdict(() if table in schema.new_tables else ("cluster",), False)
    if w[:1] == ["VACUUM"]:
        return Verdict(("vacuum-full",) if _vacuum_full(w) else (), not _vacuum_full(w))
    if w[:1] == ["LOCK"]:
        return _lock(w, schema)
    if _starts(w, "REFRESH", "MATERIALIZED", "VIEW"):
        concurrent = w[3:4] == ["CONCURRENTLY"]
        return Verdict(() if concurrent else ("refresh-matview-not-concurrently",), concurrent)
    if _starts(w, "ALTER", "TYPE") and "ADD" in w and "VALUE" in w:
        return Verdict((), True)  # a new enum label: the old release never writes it
    return Verdict((), any(_starts(w, *p) for p in _ADDITIVE_STARTS))


def _tables_of(words: Sequence[str]) -> set[str]:
    tables = set()
    for part in split_top(words):
        name, _ = _name_at(part, _skip(part, 0, "ONLY"))
        tables.add(name)
    return tables


def _create_table(w: list[str], schema: Schema) -> Verdict:
    table, i = _name_at(w, _skip(w, 2 if w[1] == "TABLE" else 3, "IF NOT EXISTS"))
    schema.new_tables.add(table)
    if i < len(w) and w[i] == "(":
        close = top_level_index(w, ")", start=i + 1)
        for element in split_top(w[i + 1 : close if close > 0 else len(w)]):
            if element[0] not in _TABLE_CONSTRAINTS | {"LIKE"}:
                column = _column(element)
                schema.columns[(table, column.name)] = column.type
    return Verdict((), True)


def _create_index(w: list[str], schema: Schema) -> Verdict:
    concurrently = "CONCURRENTLY" in w[: w.index("INDEX") + 2]
    on = top_level_index(w, "ON")
    table, _ = _name_at(w, _skip(w, on + 1, "ONLY")) if on > 0 else ("", 0)
    before_on = w[w.index("INDEX") + 1 : on] if on > 0 else []
    names = [x for x in before_on if x not in ("CONCURRENTLY", "IF", "NOT", "EXISTS", ".")]
    is_new = table in schema.new_tables
    if is_new and names:
        schema.new_indexes.add(ident(names[-1]))
    found: list[str] = []
    if not concurrently and not is_new:
        found.append("create-index-not-concurrently")
    if concurrently and schema.in_transaction:
        found.append("concurrently-in-transaction")
    return Verdict(tuple(found), concurrently or is_new)


def _drop_index(w: list[str], schema: Schema) -> Verdict:
    concurrently = w[2:3] == ["CONCURRENTLY"]
    start = _skip(w, 3 if concurrently else 2, "IF EXISTS")
    rest = [x for x in w[start:] if x not in ("CASCADE", "RESTRICT")]
    indexes = {_name_at(p, 0)[0] for p in split_top(rest)}
    found: list[str] = []
    if not concurrently and not indexes <= schema.new_indexes:
        found.append("drop-index-not-concurrently")
    if concurrently and schema.in_transaction:
        found.append("concurrently-in-transaction")
    return Verdict(tuple(found), False)


def _option_on(options: Sequence[str], name: str) -> bool:
    """Whether a parenthesized option list `( A, B false )` turns `name` on."""
    for part in split_top(options):
        if part and part[0] == name:
            return part[1:2] not in (["FALSE"], ["OFF"], ["0"])
    return False


def _reindex(w: list[str], schema: Schema) -> Verdict:
    concurrently = "CONCURRENTLY" in w[1:4] and w[1:2] != ["("]
    if w[1:2] == ["("]:
        close = top_level_index(w, ")", start=2)
        concurrently = _option_on(w[2:close], "CONCURRENTLY") or "CONCURRENTLY" in w[close:]
    found: list[str] = []
    if not concurrently:
        found.append("reindex-not-concurrently")
    elif schema.in_transaction:
        found.append("concurrently-in-transaction")
    return Verdict(tuple(found), concurrently)


def _vacuum_full(w: list[str]) -> bool:
    if w[1:2] == ["FULL"]:
        return True
    if w[1:2] == ["("]:
        return _option_on(w[2 : top_level_index(w, ")", start=2)], "FULL")
    return False


def _lock(w: list[str], schema: Schema) -> Verdict:
    start = _skip(w, 1, "TABLE")
    end = top_level_index(w, "IN", "NOWAIT", start=start)
    tables = _tables_of(w[start : end if end > 0 else len(w)])
    mode = ""
    if end > 0 and w[end] == "IN":
        stop = top_level_index(w, "MODE", start=end)
        mode = " ".join(w[end + 1 : stop if stop > 0 else len(w)])
    blocking = mode in _BLOCKING_LOCK_MODES and not tables <= schema.new_tables
    return Verdict(("lock-table",) if blocking else (), not blocking)


def _write(w: list[str], schema: Schema) -> Verdict:
    """UPDATE or DELETE: a finding when it writes every row of an existing table."""
    i = 1 if w[0] == "UPDATE" else _skip(w, 1, "FROM")
    table, _ = _name_at(w, _skip(w, i, "ONLY"))
    if table in schema.new_tables:
        return Verdict((), True)
    where = top_level_index(w, "WHERE")
    whole = where < 0
    if not whole:
        end = top_level_index(w, "RETURNING", start=where)
        condition = w[where + 1 : end if end > 0 else len(w)]
        while condition[:1] == ["("] and condition[-1:] == [")"]:
            condition = condition[1:-1]
        whole = condition in (["TRUE"], ["1", "=", "1"]) or (
            len(condition) == 3
            and condition[1:] == ["IS", "NULL"]
            and (table, ident(condition[0].split(".")[-1])) in schema.added_columns
        )
    return Verdict(("whole-table-write",) if whole else (), False)


# -- ALTER TABLE ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    name: str
    type: tuple[str, ...]
    constraints: tuple[str, ...]

    def has(self, *phrase: str) -> bool:
        c = self.constraints
        n = len(phrase)
        return any(tuple(c[i : i + n]) == phrase for i in range(len(c) - n + 1))

    def default(self) -> list[str] | None:
        """The DEFAULT expression's words, or None."""
        c = list(self.constraints)
        at = top_level_index(c, "DEFAULT")
        if at < 0:
            return None
        expr = c[at + 1 : at + 2]
        depth = 0
        for x in c[at + 2 :]:
            if depth == 0 and x in _COLUMN_CONSTRAINTS:
                break
            depth += (x in ("(", "[")) - (x in (")", "]"))
            expr.append(x)
        return expr


def _column(words: Sequence[str]) -> _Column:
    """A column definition: `name type [constraints]`."""
    name = ident(words[0]) if words else ""
    rest = list(words[1:])
    cut = top_level_index(rest, *_COLUMN_CONSTRAINTS)
    cut = len(rest) if cut < 0 else cut
    return _Column(name, tuple(rest[:cut]), tuple(rest[cut:]))


def _volatile(expr: Sequence[str]) -> bool:
    """Whether a DEFAULT expression may differ row by row (conservative: a function the lint
    does not know counts as volatile; acknowledge it when it is not)."""
    for i, x in enumerate(expr):
        if i + 1 < len(expr) and expr[i + 1] == "(" and re.fullmatch(r"[A-Z_][A-Z_0-9]*", x):
            prev = expr[i - 1] if i else ""
            if prev != "::" and x not in _NOT_VOLATILE:
                return True
    return False


def _type_key(words: Sequence[str]) -> tuple[str, tuple[int, ...], str]:
    """A type as (base name, its integer arguments, what follows): VARCHAR(50) ->
    ("VARCHAR", (50,), "")."""
    w = [x for x in words if x not in ('"',)]
    if "." in w:  # pg_catalog.varchar
        w = w[len(w) - 1 - w[::-1].index(".") + 1 :]
    open_at = w.index("(") if "(" in w else -1
    base_words = w[:open_at] if open_at >= 0 else w
    args: tuple[int, ...] = ()
    tail: list[str] = []
    if open_at >= 0:
        close = w.index(")", open_at) if ")" in w[open_at:] else len(w)
        args = tuple(int(x) for x in w[open_at + 1 : close] if x.isdigit())
        tail = w[close + 1 :]
    base = " ".join(base_words).upper()
    return _TYPE_ALIASES.get(base, base), args, " ".join(tail)


def _widens(old: Sequence[str], new: Sequence[str]) -> bool:
    """Whether PostgreSQL changes `old` into `new` without a rewrite (binary coercible and no
    stricter): varchar(n) to a longer or unbounded varchar or text, numeric(p, s) to a larger
    precision of the same scale, varbit(n) longer, cidr to inet, and the type itself."""
    o_base, o_args, o_tail = _type_key(old)
    n_base, n_args, n_tail = _type_key(new)
    if o_tail or n_tail:
        return (o_base, o_args, o_tail) == (n_base, n_args, n_tail)
    if (o_base, o_args) == (n_base, n_args):
        return True
    if n_base == "TEXT":
        return o_base in ("VARCHAR", "TEXT")
    if n_base in ("VARCHAR", "VARBIT") and o_base in (
        n_base,
        "TEXT" if n_base == "VARCHAR" else "",
    ):
        return not n_args or (o_base == n_base and bool(o_args) and n_args[0] >= o_args[0])
    if n_base == "NUMERIC" and o_base == "NUMERIC":
        if not n_args:
            return True
        if len(o_args) >= 1:
            o_scale = o_args[1] if len(o_args) > 1 else 0
            n_scale = n_args[1] if len(n_args) > 1 else 0
            return o_scale == n_scale and n_args[0] >= o_args[0]
        return False
    return (o_base, n_base) == ("CIDR", "INET")


def _not_null_check(expr: Sequence[str]) -> str:
    """The column of a CHECK ( col IS NOT NULL ), or ""."""
    e = list(expr)
    while e[:1] == ["("] and e[-1:] == [")"]:
        e = e[1:-1]
    if len(e) == 4 and e[1:] == ["IS", "NOT", "NULL"]:
        return ident(e[0])
    return ""


def _alter_table(w: list[str], schema: Schema) -> Verdict:
    table, i = _name_at(w, _skip(w, 2, "IF EXISTS", "ONLY"))
    is_new = table in schema.new_tables
    found: list[str] = []
    additive = True
    # One ALTER TABLE may carry several comma-separated actions.
    for act in split_top(w[i:]):
        rules, adds = _action(act, table, is_new, schema)
        found += rules
        additive = additive and adds
    if not schema.in_transaction:
        schema.pending.clear()  # the statement was its own transaction
    return Verdict(tuple(dict.fromkeys(found)), additive and not _blocking(found))


def _blocking(found: Sequence[str]) -> bool:
    return any(RULE_OF[r].blocks_expand for r in found)


def _action(act: list[str], table: str, is_new: bool, schema: Schema) -> tuple[list[str], bool]:
    """One ALTER TABLE action: the rules it breaks, and whether it only adds."""
    verb = act[0]
    if len(act) < 2:
        return [], is_new  # not an action PostgreSQL would run either
    if verb == "ADD" and (act[1] == "COLUMN" or act[1] not in _TABLE_CONSTRAINTS):
        return _add_column(act, table, is_new, schema)
    if verb == "ADD":
        return _add_constraint(act, table, is_new, schema)
    if verb == "VALIDATE":
        name = ident(act[2]) if len(act) > 2 else ""
        column = schema.not_valid.pop((table, name), "")
        if column:
            schema.proven_not_null.add((table, column))
        if (table, name) in schema.pending:
            return ["validate-in-same-transaction"], True
        return [], True
    if verb == "ALTER" and act[1:2] != ["CONSTRAINT"]:
        return _alter_column(act, table, is_new, schema)
    if verb == "DROP" and act[1:2] not in (["CONSTRAINT"], ["DEFAULT"]):
        return ([] if is_new else ["drop-column"]), is_new
    if verb == "RENAME" and act[1:2] == ["TO"]:
        return ["rename-table"], False
    if verb == "RENAME" and act[1:2] != ["CONSTRAINT"]:
        return ([] if is_new else ["rename-column"]), is_new
    if verb == "SET" and (
        act[1:2] in (["TABLESPACE"], ["LOGGED"], ["UNLOGGED"]) or act[1:3] == ["ACCESS", "METHOD"]
    ):
        return ([] if is_new else ["rewrite-table"]), is_new
    if verb in ("SET", "RESET") and act[1:2] == ["("]:
        return [], True  # storage parameters: no rewrite, nothing the application sees
    return [], is_new


def _add_column(act: list[str], table: str, is_new: bool, schema: Schema) -> tuple[list[str], bool]:
    start = _skip(act, _skip(act, 1, "COLUMN"), "IF NOT EXISTS")
    column = _column(act[start:])
    schema.columns[(table, column.name)] = column.type
    if is_new:
        return [], True
    found: list[str] = []
    default = column.default()
    serial = bool(column.type) and column.type[0] in _SERIAL_TYPES
    if serial or column.has("AS", "IDENTITY"):
        found.append("add-serial-column")
    elif (column.has("GENERATED", "ALWAYS", "AS") and column.has("STORED")) or (
        default is not None and _volatile(default)
    ):
        found.append("add-column-volatile-default")
    elif column.has("NOT", "NULL") and (default is None or default == ["NULL"]):
        found.append("add-not-null-column")
    if column.has("UNIQUE"):
        found.append("add-column-unique")
    if column.has("PRIMARY", "KEY"):
        found.append("add-primary-key")
    if not found and default is None:
        schema.added_columns.add((table, column.name))  # all NULL: a backfill touches every row
    return found, not found


def _add_constraint(
    act: list[str], table: str, is_new: bool, schema: Schema
) -> tuple[list[str], bool]:
    name = ident(act[2]) if act[1] == "CONSTRAINT" and len(act) > 2 else ""
    body = act[3:] if name else act[1:]
    kind = body[0] if body else ""
    not_valid = any(body[i : i + 2] == ["NOT", "VALID"] for i in range(len(body) - 1))
    check_column = ""
    if kind == "CHECK":
        close = top_level_index(body, ")", start=2)
        check_column = _not_null_check(body[1 : close + 1] if close > 0 else body[1:])
    if is_new:
        return [], True
    if kind in ("CHECK", "FOREIGN"):
        if not not_valid:
            if check_column:
                schema.proven_not_null.add((table, check_column))
            return ["constraint-without-not-valid"], False
        schema.not_valid[(table, name)] = check_column
        schema.pending.add((table, name))
        return [], True
    using_index = "USING" in body and body[body.index("USING") + 1 : body.index("USING") + 2] == [
        "INDEX"
    ]
    if using_index:
        return [], True
    if kind == "PRIMARY":
        return ["add-primary-key"], False
    if kind in ("UNIQUE", "EXCLUDE"):
        return ["add-unique-constraint"], False
    return [], False


def _alter_column(
    act: list[str], table: str, is_new: bool, schema: Schema
) -> tuple[list[str], bool]:
    start = _skip(act, 1, "COLUMN")
    column = ident(act[start]) if start < len(act) else ""
    sub = act[start + 1 :]
    key = (table, column)
    if sub[:1] == ["TYPE"] or sub[:3] == ["SET", "DATA", "TYPE"]:
        rest = sub[1:] if sub[0] == "TYPE" else sub[3:]
        cut = top_level_index(rest, "USING", "COLLATE")
        new_type = tuple(rest if cut < 0 else rest[:cut])
        old_type = schema.columns.get(key)
        schema.columns[key] = new_type
        if is_new:
            return [], True
        if cut < 0 and old_type is not None and _widens(old_type, new_type):
            return [], True
        return ["alter-column-type"], False
    if sub[:3] == ["SET", "NOT", "NULL"]:
        if is_new:
            return [], True
        if key in schema.proven_not_null:
            return [], True
        return ["set-not-null"], False
    if sub[:2] in (["SET", "DEFAULT"], ["DROP", "NOT"], ["SET", "STATISTICS"], ["SET", "STORAGE"]):
        return [], True
    if sub[:2] in (["SET", "("], ["RESET", "("]):
        return [], True
    return [], is_new
