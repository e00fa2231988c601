"""The rules of ALTER TABLE, action by action (one statement may carry several): what each
locks or breaks, given what the lint knows of the schema, and what it teaches it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from deploytools.sql_lint.catalog import RULE_OF
from deploytools.sql_lint.schema import Schema, Verdict
from deploytools.sql_lint.statements import ident, name_at, skip, split_top, top_level_index

_SERIAL_TYPES = {"SERIAL", "BIGSERIAL", "SMALLSERIAL", "SERIAL2", "SERIAL4", "SERIAL8"}
_COLUMN_CONSTRAINTS = {
    "NOT", "NULL", "DEFAULT", "CONSTRAINT", "CHECK", "UNIQUE", "PRIMARY", "REFERENCES",
    "GENERATED", "COLLATE", "COMPRESSION", "STORAGE",
}  # fmt: skip
TABLE_CONSTRAINTS = {"CONSTRAINT", "CHECK", "FOREIGN", "UNIQUE", "PRIMARY", "EXCLUDE"}
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


def column_definition(words: Sequence[str]) -> _Column:
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
    w = [x[1:-1].upper() if x.startswith('"') else x for x in words]
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


def alter_table(w: list[str], schema: Schema) -> Verdict:
    table, i = name_at(w, skip(w, 2, "IF EXISTS", "ONLY"))
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
    if verb == "ADD" and (act[1] == "COLUMN" or act[1] not in TABLE_CONSTRAINTS):
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
        return ([] if is_new else ["rename-table"]), is_new
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
    start = skip(act, skip(act, 1, "COLUMN"), "IF NOT EXISTS")
    column = column_definition(act[start:])
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
    start = skip(act, 1, "COLUMN")
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
