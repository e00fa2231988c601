"""The SQL lint on its corpus (tests/data/sql_lint_corpus.toml): every statement built from the
PostgreSQL documentation's lock levels gets the verdict the corpus gives it, hazard or safe.
benchmarks/lint_bench.py runs Squawk on the same cases."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from deploytools.sql_lint import RULES, lint_file

CORPUS = Path(__file__).resolve().parents[1] / "data" / "sql_lint_corpus.toml"
#: What every case runs after, unless it says `preamble = false` (benchmarks/lint_bench.py too).
PREAMBLE = "SET lock_timeout = '5s';\nSET statement_timeout = '60s';\n"


def cases() -> list[dict[str, Any]]:
    with CORPUS.open("rb") as f:
        found: list[dict[str, Any]] = tomllib.load(f)["case"]
    return found


def expected(case: dict[str, Any]) -> set[str]:
    expect = case["expect"]
    names = {expect} if isinstance(expect, str) else set(expect)
    return names - {"safe"}


@pytest.mark.parametrize("case", cases(), ids=lambda c: str(c["id"]))
def test_each_case_gets_its_verdict(case: dict[str, Any]) -> None:
    sql = (PREAMBLE if case.get("preamble", True) else "") + case["sql"]
    result = lint_file(sql, name=f"{case['id']}.sql", context_sql=case.get("schema", ""))
    assert {f.rule for f in result.findings} == expected(case), case["doc"]
    assert result.expand_only is case["expand_only"], result.not_additive


def test_the_corpus_is_large_and_covers_every_rule() -> None:
    all_cases = cases()
    hazards = [c for c in all_cases if expected(c)]
    safe = [c for c in all_cases if not expected(c)]
    assert len(all_cases) >= 40
    assert len(hazards) >= 30 and len(safe) >= 15
    assert len({c["id"] for c in all_cases}) == len(all_cases), "ids are unique"
    covered = set().union(*(expected(c) for c in all_cases))
    assert covered == set(RULES), f"rules without a case: {set(RULES) - covered}"
    for case in all_cases:
        assert case["doc"] and case["sql"].strip(), case["id"]
        assert not expected(case) - set(RULES), case["id"]
