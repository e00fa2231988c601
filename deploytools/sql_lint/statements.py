"""SQL text as statements: a small PostgreSQL lexer, enough to lint migrations.

A statement is split at `;` outside quotes and comments (strings, "identifiers", $tag$ bodies,
`--` and nested `/* */` comments), keeps its source text for messages and its first line for
people, and carries `words`: its tokens with comments dropped, string literals emptied to `''`
and unquoted words upper-cased. The rules read only `words`, so a keyword inside a comment or a
string (`/* DEFAULT 0 */`, `COMMENT ... IS 'DROP TABLE'`) never counts, and one hidden behind a
comment (`NOT/**/NULL`) still does.

Alembic's offline output names the migration of what follows with `-- Running upgrade A -> B`:
statements after it belong to revision B; those before the first marker to none ("").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_RUNNING_RE = re.compile(r"^--\s*Running upgrade\s+(?:(\S+)\s+)?->\s*(\S+)", re.IGNORECASE)
_DOLLAR_RE = re.compile(r"\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$")
_WORD_RE = re.compile(r"[A-Za-z_\x80-\uffff][A-Za-z_0-9$\x80-\uffff]*")
_NUMBER_RE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_OPERATOR_CHARS = "+-*/<>=~!@#%^&|`?"


@dataclass(frozen=True)
class Token:
    kind: str  # word, qident, string, number, op, semi, comment
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Statement:
    """One SQL statement, and the migration it belongs to."""

    revision: str
    sql: str
    #: The 1-based line of the statement's first token in the text it was split from.
    line: int = 0
    #: The tokens the rules read (see the module's docstring).
    words: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def code(self) -> str:
        """The words joined by single spaces: `ALTER TABLE users ADD COLUMN a TEXT`."""
        return " ".join(self.words)


def _block_comment_end(sql: str, i: int) -> int:
    """The end of the (nested) block comment opening at i."""
    depth = 0
    n = len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


def _quoted_end(sql: str, i: int, quote: str, backslash: bool = False) -> int:
    """The end of the quoted text opening at i (a doubled quote is the quote itself)."""
    n = len(sql)
    j = i + 1
    while j < n:
        c = sql[j]
        if backslash and c == "\\":
            j += 2
            continue
        if c == quote:
            if j + 1 < n and sql[j + 1] == quote:
                j += 2
                continue
            return j + 1
        j += 1
    return n


def tokenize(sql: str) -> list[Token]:
    """Every token of `sql`, comments included (an unterminated one runs to the end)."""
    tokens: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
            continue
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            kind = "comment"
        elif sql.startswith("/*", i):
            end = _block_comment_end(sql, i)
            kind = "comment"
        elif c == "'":
            end = _quoted_end(sql, i, "'")
            kind = "string"
        elif c in "EeBbXxNnUu" and i + 1 < n and sql[i + 1] == "'":
            end = _quoted_end(sql, i + 1, "'", backslash=c in "Ee")
            kind = "string"
        elif c == '"':
            end = _quoted_end(sql, i, '"')
            kind = "qident"
        elif c == "$" and (dollar := _DOLLAR_RE.match(sql, i)):
            close = sql.find(dollar.group(0), dollar.end())
            end = n if close < 0 else close + len(dollar.group(0))
            kind = "string"
        elif c == ";":
            end, kind = i + 1, "semi"
        elif word := _WORD_RE.match(sql, i):
            end, kind = word.end(), "word"
        elif c.isdigit() or (c == "." and i + 1 < n and sql[i + 1].isdigit()):
            number = _NUMBER_RE.match(sql, i)
            end, kind = (number.end() if number else i + 1), "number"
        elif sql.startswith("::", i):
            end, kind = i + 2, "op"
        elif c in _OPERATOR_CHARS:
            end = i + 1
            while end < n and sql[end] in _OPERATOR_CHARS and not sql.startswith(("--", "/*"), end):
                end += 1
            kind = "op"
        else:
            end, kind = i + 1, "op"  # ( ) , . [ ] and anything else, one character each
        tokens.append(Token(kind, sql[i:end], i, end))
        i = end
    return tokens


def _word(token: Token) -> str:
    if token.kind == "word":
        return token.text.upper()
    if token.kind == "string":
        return "''"
    return token.text


def split_statements(sql: str) -> list[Statement]:
    """The statements of `sql`, each with the revision whose upgrade emits it (Alembic's
    `-- Running upgrade A -> B` markers) and its first line."""
    statements: list[Statement] = []
    revision = ""
    body: list[Token] = []
    # The line of offset `counted`, carried forward: counting from 0 for every statement is
    # quadratic, and the context SQL of an adopted service's history runs to megabytes.
    counted, line = 0, 1

    def close() -> None:
        nonlocal counted, line
        if body:
            text = sql[body[0].start : body[-1].end].strip()
            words = tuple(_word(t) for t in body if t.kind != "comment")
            line += sql.count("\n", counted, body[0].start)
            counted = body[0].start
            statements.append(Statement(revision=revision, sql=text, line=line, words=words))
            body.clear()

    for token in tokenize(sql):
        if token.kind == "semi":
            close()
        elif token.kind == "comment" and not body:
            running = _RUNNING_RE.match(token.text)
            if running:
                revision = running.group(2)
        else:
            body.append(token)
    close()
    return statements


def ident(word: str) -> str:
    """A name as PostgreSQL compares it: a quoted one as written, an unquoted one lower-cased."""
    if word.startswith('"') and word.endswith('"') and len(word) >= 2:
        return word[1:-1].replace('""', '"')
    return word.lower()


def split_top(words: Sequence[str], sep: str = ",") -> list[list[str]]:
    """`words` split at `sep` outside parentheses and brackets."""
    parts: list[list[str]] = [[]]
    depth = 0
    for w in words:
        if w in ("(", "["):
            depth += 1
        elif w in (")", "]"):
            depth -= 1
        if w == sep and depth == 0:
            parts.append([])
            continue
        parts[-1].append(w)
    return [p for p in parts if p]


def top_level_index(words: Sequence[str], *targets: str, start: int = 0) -> int:
    """The index of the first of `targets` outside parentheses at or after `start`, or -1."""
    depth = 0
    for i in range(start, len(words)):
        w = words[i]
        if depth == 0 and w in targets:
            return i
        if w in ("(", "["):
            depth += 1
        elif w in (")", "]"):
            depth -= 1
    return -1


def starts(words: Sequence[str], *prefix: str) -> bool:
    return tuple(words[: len(prefix)]) == prefix


def name_at(words: Sequence[str], i: int) -> tuple[str, int]:
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


def skip(words: Sequence[str], i: int, *optional: str) -> int:
    """Past any of the optional words (or phrases, space-separated) at i, in order."""
    for phrase in optional:
        parts = phrase.split()
        if list(words[i : i + len(parts)]) == parts:
            i += len(parts)
    return i
