"""`deploytools migrations lint FILE|-`."""

from __future__ import annotations

from typing import IO

import click

from deploytools.cli.app import AppState, cli, emit, pass_state
from deploytools.sql_lint import RULES, LintResult, lint_file, raise_if_failing, summary


@cli.group("migrations")
def migrations() -> None:
    """Lint migration SQL by hand, with the rules release verify applies to a release."""


def _read(handle: IO[str], param: str) -> str:
    try:
        return handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise click.BadParameter(f"cannot read {handle.name}: {error}", param_hint=param) from None


@migrations.command(
    "lint",
    epilog="Rules: " + ", ".join(RULES) + ". See docs/migrations.md for what each one means.",
)
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option(
    "--schema",
    type=click.File("r", encoding="utf-8"),
    default=None,
    help="SQL that built the schema the migration starts from (pg_dump --schema-only): read "
    "for the columns' types, so that widening a varchar or numeric is not a finding.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@pass_state
def lint(state: AppState, file: IO[str], schema: IO[str] | None, as_json: bool) -> None:
    """Lint the SQL of FILE (- for standard input) as PostgreSQL would run it.

    Each statement is checked against the rules for locks that stop the service (a table
    rewrite, an index built without CONCURRENTLY, a whole-table backfill, TRUNCATE, CLUSTER,
    VACUUM FULL ...) and for changes that break the release still running (a dropped or renamed
    column, a NOT NULL column without a default). Each finding is printed with its rule, its
    line and its statement, then the verdict: expand-only when every statement only adds, so
    the release before can keep serving while the migration runs.

    A finding is acknowledged by a comment in the SQL that names the rule and says why:
    `-- deploytools: allow truncate the table only holds a cache`.

    Exits 0 when every finding is acknowledged (or none), 1 when one is not, 2 when FILE cannot
    be read.
    """
    if as_json:
        state.json = True
    name = "stdin" if file.name in ("-", "<stdin>") else file.name
    text = _read(file, "FILE")
    context = _read(schema, "--schema") if schema is not None else ""
    result = lint_file(text, name=name, context_sql=context)

    def human() -> None:
        _print(result, name)

    if not result.failing:
        emit(state, summary(result), human)
        return
    if not state.json:
        human()
    # Under --json the error object carries the whole lint: one JSON document on stdout.
    raise_if_failing(result, name=name)


def _print(result: LintResult, name: str) -> None:
    for finding in result.findings:
        shown = " ".join(finding.statement.split())
        shown = shown if len(shown) <= 160 else shown[:157] + "..."
        tag = f" [acknowledged: {finding.reason}]" if finding.acknowledged else ""
        click.echo(f"{name}:{finding.line}: {finding.rule}: {shown}{tag}")
        if not finding.acknowledged:
            click.echo(f"    {finding.message}")
    failing = len(result.failing)
    verdict = "expand-only" if result.expand_only else "not expand-only"
    click.echo(f"{name}: {len(result.findings)} finding(s), {failing} unacknowledged; {verdict}")
