"""The rules of one statement: what it locks or breaks, given what the lint knows of the schema
(schema.py). Nothing here reads text: the rules read a statement's `words` (statements.py), so
comments and strings never count. ALTER TABLE's actions are in alter_table.py; the rules' names
and meanings in catalog.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from deploytools.sql_lint.alter_table import TABLE_CONSTRAINTS, alter_table, column_definition
from deploytools.sql_lint.catalog import RULE_OF, RULES, Rule
from deploytools.sql_lint.schema import Schema, Verdict
from deploytools.sql_lint.statements import ident, name_at, skip, split_top, starts, top_level_index

__all__ = ["RULES", "RULE_OF", "Rule", "Schema", "Verdict", "judge", "transaction_edge"]

_BLOCKING_LOCK_MODES = {"", "ACCESS EXCLUSIVE", "EXCLUSIVE", "SHARE ROW EXCLUSIVE", "SHARE"}
_ADDITIVE_STARTS = (
    ("CREATE", "TABLE"), ("CREATE", "UNLOGGED", "TABLE"), ("CREATE", "SEQUENCE"),
    ("CREATE", "TYPE"), ("CREATE", "DOMAIN"), ("CREATE", "VIEW"),
    ("CREATE", "MATERIALIZED", "VIEW"), ("CREATE", "FUNCTION"), ("CREATE", "PROCEDURE"),
    ("CREATE", "EXTENSION"), ("CREATE", "SCHEMA"), ("COMMENT", "ON"), ("INSERT", "INTO"),
    ("ANALYZE",), ("GRANT",),
)  # fmt: skip


def transaction_edge(words: Sequence[str]) -> str | None:
    """For a statement that opens a transaction block, "begin"; that closes one, "end"."""
    first = words[0] if words else ""
    if first == "BEGIN" or (first == "START" and words[1:2] == ["TRANSACTION"]):
        return "begin"
    if first in ("COMMIT", "END", "ROLLBACK", "ABORT") and "PREPARED" not in words:
        return "end"
    return None


def judge(words: Sequence[str], schema: Schema) -> Verdict:
    """The rules one statement breaks (before acknowledgements) and whether it only adds;
    updates `schema` with what the statement teaches."""
    w = list(words)
    if starts(w, "CREATE", "TABLE") or starts(w, "CREATE", "UNLOGGED", "TABLE"):
        return _create_table(w, schema)
    if w[:1] == ["CREATE"] and "INDEX" in w[:4]:
        return _create_index(w, schema)
    if starts(w, "ALTER", "TABLE"):
        return alter_table(w, schema)
    if starts(w, "DROP", "TABLE"):
        dropped = {name_at(p, 0)[0] for p in split_top(w[skip(w, 2, "IF EXISTS") :])}
        return Verdict(() if dropped <= schema.new_tables else ("drop-table",), False)
    if starts(w, "DROP", "INDEX"):
        return _drop_index(w, schema)
    if w[:1] == ["REINDEX"]:
        return _reindex(w, schema)
    if w[:1] == ["TRUNCATE"]:
        emptied = _tables_of(w[skip(w, 1, "TABLE") :])
        return Verdict(() if emptied <= schema.new_tables else ("truncate",), False)
    if w[:1] in (["UPDATE"], ["DELETE"]):
        return _write(w, schema)
    if w[:1] == ["CLUSTER"]:
        table, _ = name_at(w, skip(w, 1, "VERBOSE"))
        return Verdict(() if table in schema.new_tables else ("cluster",), False)
    if w[:1] == ["VACUUM"]:
        return Verdict(("vacuum-full",) if _vacuum_full(w) else (), not _vacuum_full(w))
    if w[:1] == ["LOCK"]:
        return _lock(w, schema)
    if starts(w, "REFRESH", "MATERIALIZED", "VIEW"):
        concurrent = w[3:4] == ["CONCURRENTLY"]
        return Verdict(() if concurrent else ("refresh-matview-not-concurrently",), concurrent)
    if starts(w, "ALTER", "TYPE") and "ADD" in w and "VALUE" in w:
        return Verdict((), True)  # a new enum label: the old release never writes it
    return Verdict((), any(starts(w, *p) for p in _ADDITIVE_STARTS))


def _tables_of(words: Sequence[str]) -> set[str]:
    tables = set()
    for part in split_top(words):
        name, _ = name_at(part, skip(part, 0, "ONLY"))
        tables.add(name)
    return tables


def _create_table(w: list[str], schema: Schema) -> Verdict:
    table, i = name_at(w, skip(w, 2 if w[1] == "TABLE" else 3, "IF NOT EXISTS"))
    schema.new_tables.add(table)
    if i < len(w) and w[i] == "(":
        close = top_level_index(w, ")", start=i + 1)
        for element in split_top(w[i + 1 : close if close > 0 else len(w)]):
            if element[0] not in TABLE_CONSTRAINTS | {"LIKE"}:
                column = column_definition(element)
                schema.columns[(table, column.name)] = column.type
    return Verdict((), True)


def _create_index(w: list[str], schema: Schema) -> Verdict:
    concurrently = "CONCURRENTLY" in w[: w.index("INDEX") + 2]
    on = top_level_index(w, "ON")
    table, _ = name_at(w, skip(w, on + 1, "ONLY")) if on > 0 else ("", 0)
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
    start = skip(w, 3 if concurrently else 2, "IF EXISTS")
    rest = [x for x in w[start:] if x not in ("CASCADE", "RESTRICT")]
    indexes = {name_at(p, 0)[0] for p in split_top(rest)}
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
    start = skip(w, 1, "TABLE")
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
    i = 1 if w[0] == "UPDATE" else skip(w, 1, "FROM")
    table, _ = name_at(w, skip(w, i, "ONLY"))
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
