"""Former column types from an Alembic migration's own source.

`ALTER COLUMN ... TYPE varchar(100)` is a rewrite or not depending on the column's type before,
which the SQL does not say. Alembic's `op.alter_column(table, column, type_=...,
existing_type=...)` does (autogenerate always writes existing_type): the migration file is read
with `ast`, never imported, and each existing_type becomes the column's former type.
"""

from __future__ import annotations

import ast

from deploytools.sql_lint.statements import ident

_VARCHAR = {"VARCHAR", "STRING", "UNICODE", "NVARCHAR"}
_TEXT = {"TEXT", "UNICODETEXT"}
_NUMERIC = {"NUMERIC", "DECIMAL"}
_PLAIN = {
    "INTEGER": "INTEGER",
    "BIGINTEGER": "BIGINT",
    "BIGINT": "BIGINT",
    "SMALLINTEGER": "SMALLINT",
}


def _literal(node: ast.expr | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _type_words(node: ast.expr) -> tuple[str, ...] | None:
    """`sa.VARCHAR(length=50)` -> ("VARCHAR", "(", "50", ")"); None for what it cannot tell."""
    call = node if isinstance(node, ast.Call) else None
    func = call.func if call else node
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    name = str(name).upper()
    args = list(call.args) if call else []
    kwargs = {k.arg: k.value for k in call.keywords} if call else {}

    def number(position: int, keyword: str) -> object:
        return _literal(kwargs.get(keyword) or (args[position] if len(args) > position else None))

    if name in _VARCHAR:
        length = number(0, "length")
        return ("VARCHAR", "(", str(length), ")") if isinstance(length, int) else ("VARCHAR",)
    if name in _TEXT:
        return ("TEXT",)
    if name in _NUMERIC:
        precision, scale = number(0, "precision"), number(1, "scale")
        if not isinstance(precision, int):
            return ("NUMERIC",)
        digits = [str(precision)] + ([",", str(scale)] if isinstance(scale, int) else [])
        return ("NUMERIC", "(", *digits, ")")
    if name in _PLAIN:
        return (_PLAIN[name],)
    return None


def former_types(source: str) -> dict[tuple[str, str], tuple[str, ...]]:
    """(table, column) -> its type before the migration, from `alter_column(existing_type=)`."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    found: dict[tuple[str, str], tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr != "alter_column":
            continue
        kwargs = {k.arg: k.value for k in node.keywords}
        table = _literal(node.args[0] if node.args else kwargs.get("table_name"))
        column = _literal(node.args[1] if len(node.args) > 1 else kwargs.get("column_name"))
        existing = kwargs.get("existing_type")
        if isinstance(table, str) and isinstance(column, str) and existing is not None:
            words = _type_words(existing)
            if words:
                found[(ident(table), ident(column))] = words
    return found
