"""The migration lint beside Squawk, on the corpus of tests/data/sql_lint_corpus.toml.

    .venv/bin/python benchmarks/lint_bench.py [--squawk PATH] [--pg-version 15] [--all]

Each case of the corpus (statements built from PostgreSQL's lock levels, each marked hazard or
safe) is written to a file, after `SET lock_timeout`/`statement_timeout` unless the case says
`preamble = false`, and linted by both tools as a person would run them:
`deploytools --json migrations lint FILE` (with `--schema` when the case gives the schema
before, which only deploytools can use) and `squawk --reporter json --pg-version 15 FILES`
(PyPI's `squawk-cli`, a dev dependency). For each tool it prints the hazards caught, those
missed and the false positives (a finding on a safe case), then every case where the two
disagree, with the rules each reported.

Squawk's advice rules (prefer-robust-stmts, prefer-identity, prefer-bigint-over-int, ...) say
how to write a migration, not that it locks or breaks anything: they count neither as a catch
nor as a false positive. deploytools' catch must be the rule the corpus names (the unit test
tests/unit/test_sql_lint_corpus.py holds it to that); Squawk's is any of its other rules.
It measures; it does not assert. Record the figures in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploytools.sql_lint import lint_file

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "sql_lint_corpus.toml"
PREAMBLE = "SET lock_timeout = '5s';\nSET statement_timeout = '60s';\n"
SQUAWK_ADVICE = frozenset(
    {
        "prefer-robust-stmts",
        "prefer-identity",
        "prefer-bigint-over-int",
        "prefer-bigint-over-smallint",
        "prefer-big-int",
        "prefer-text-field",
        "prefer-timestamptz",
        "ban-char-field",
        "require-enum-value-ordering",
    }
)


@dataclass(frozen=True)
class Case:
    id: str
    expect: frozenset[str]  # empty: safe
    sql: str
    schema: str

    @property
    def hazard(self) -> bool:
        return bool(self.expect)


@dataclass(frozen=True)
class Score:
    caught: list[str]
    missed: list[str]
    false_positives: list[str]


def load_cases() -> list[Case]:
    with CORPUS.open("rb") as f:
        raw: list[dict[str, Any]] = tomllib.load(f)["case"]
    found = []
    for c in raw:
        expect = {c["expect"]} if isinstance(c["expect"], str) else set(c["expect"])
        sql = (PREAMBLE if c.get("preamble", True) else "") + c["sql"]
        found.append(Case(c["id"], frozenset(expect - {"safe"}), sql, c.get("schema", "")))
    return found


def run_deploytools(cases: list[Case], workdir: Path) -> dict[str, set[str]]:
    flagged: dict[str, set[str]] = {}
    for case in cases:
        argv = [sys.executable, "-m", "deploytools", "--json", "migrations", "lint"]
        if case.schema:
            schema = workdir / f"{case.id}.schema.sql"
            schema.write_text(case.schema, encoding="utf-8")
            argv += ["--schema", str(schema)]
        argv.append(str(workdir / f"{case.id}.sql"))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode not in (0, 1):
            raise SystemExit(f"deploytools failed on {case.id}: {done.stderr.strip()}")
        document = json.loads(done.stdout)
        lint = document["result"] if document["ok"] else document["error"]["facts"]["lint"]
        flagged[case.id] = {f["rule"] for f in lint["findings"]}
    return flagged


def run_squawk(
    squawk: str, pg_version: str, cases: list[Case], workdir: Path
) -> dict[str, set[str]]:
    files = [f"{case.id}.sql" for case in cases]
    argv = [squawk, "--reporter", "json", "--pg-version", pg_version, *files]
    done = subprocess.run(
        argv, cwd=workdir, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode not in (0, 1):
        raise SystemExit(f"squawk failed (exit {done.returncode}): {done.stderr.strip()}")
    flagged: dict[str, set[str]] = defaultdict(set)
    for violation in json.loads(done.stdout or "[]"):
        flagged[Path(violation["file"]).stem].add(violation["rule_name"])
    return {case.id: flagged[case.id] for case in cases}


def score(cases: list[Case], flagged: dict[str, set[str]], *, exact: bool) -> Score:
    caught, missed, false_positives = [], [], []
    for case in cases:
        rules = flagged[case.id]
        if case.hazard:
            hit = case.expect <= rules if exact else bool(rules)
            (caught if hit else missed).append(case.id)
        elif rules:
            false_positives.append(case.id)
    return Score(caught, missed, false_positives)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--squawk", default=None, help="the squawk binary (default: on PATH)")
    parser.add_argument("--pg-version", default="15", help="Squawk's --pg-version (15)")
    parser.add_argument(
        "--all", action="store_true", help="list every case, not only disagreements"
    )
    args = parser.parse_args()
    squawk = args.squawk or shutil.which("squawk") or str(Path(sys.executable).parent / "squawk")
    if not Path(squawk).exists() and not shutil.which(squawk):
        raise SystemExit("squawk not found: pip install squawk-cli (in the dev extras)")
    version = subprocess.run([squawk, "--version"], capture_output=True, text=True, check=False)
    cases = load_cases()
    with tempfile.TemporaryDirectory(prefix="lint-bench-") as tmp:
        workdir = Path(tmp)
        for case in cases:
            (workdir / f"{case.id}.sql").write_text(case.sql, encoding="utf-8")
        started = time.monotonic()
        ours = run_deploytools(cases, workdir)
        ours_s = time.monotonic() - started
        started = time.monotonic()
        raw_theirs = run_squawk(squawk, args.pg_version, cases, workdir)
        theirs_s = time.monotonic() - started
    theirs = {k: v - SQUAWK_ADVICE for k, v in raw_theirs.items()}
    # The CLI's wall time is mostly 70 interpreter start-ups; the lint itself, in process:
    started = time.monotonic()
    for case in cases:
        lint_file(case.sql, name=case.id, context_sql=case.schema)
    in_process_s = time.monotonic() - started
    # Squawk never sees the schema before; what deploytools says without it too:
    blind = {c.id: {f.rule for f in lint_file(c.sql, name=c.id).findings} for c in cases}
    hazards = sum(c.hazard for c in cases)
    safe = len(cases) - hazards
    print(
        f"corpus: {len(cases)} cases, {hazards} hazards, {safe} safe ({CORPUS.relative_to(ROOT)})"
    )
    print(f"squawk: {version.stdout.strip()} --pg-version {args.pg_version}")
    print()
    print(f"{'tool':<12} {'caught':>8} {'missed':>8} {'false pos.':>11} {'wall':>8}")
    scores = {
        "deploytools": (score(cases, ours, exact=True), ours_s),
        "squawk": (score(cases, theirs, exact=False), theirs_s),
    }
    for tool, (s, wall) in scores.items():
        print(
            f"{tool:<12} {len(s.caught):>4}/{hazards:<3} {len(s.missed):>8} "
            f"{len(s.false_positives):>5}/{safe:<5} {wall:>7.1f}s"
        )
    print(f"(deploytools: one process per case; the lint alone, in process: {in_process_s:.2f} s)")
    blind_score = score(cases, blind, exact=True)
    print(
        f"(deploytools without the cases' schema: {len(blind_score.caught)}/{hazards} caught, "
        f"{len(blind_score.false_positives)}/{safe} false positives "
        f"{blind_score.false_positives})"
    )
    ours_score, theirs_score = scores["deploytools"][0], scores["squawk"][0]
    print()
    only_squawk = sorted(set(theirs_score.caught) - set(ours_score.caught))
    both_missed = sorted(set(ours_score.missed) & set(theirs_score.missed))
    print(f"hazards Squawk catches and deploytools misses: {len(only_squawk)} {only_squawk}")
    only_ours = sorted(set(ours_score.caught) - set(theirs_score.caught))
    print(f"hazards deploytools catches and Squawk misses: {len(only_ours)} {only_ours}")
    print(f"hazards both miss: {len(both_missed)} {both_missed}")
    print()
    print("disagreements (case: expected | deploytools | squawk):")
    for case in cases:
        ours_hit = bool(ours[case.id])
        theirs_hit = bool(theirs[case.id])
        if ours_hit != theirs_hit or args.all:
            expect = ",".join(sorted(case.expect)) or "safe"
            print(
                f"  {case.id}: {expect} | {','.join(sorted(ours[case.id])) or '-'} | "
                f"{','.join(sorted(theirs[case.id])) or '-'}"
            )


if __name__ == "__main__":
    main()
