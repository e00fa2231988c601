"""The suite's tiers: each test is marked with its directory's tier, a plain pytest selects the
unit tier, and scripts/test's expression names every tier (so it never ends in "no tests ran")."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from tests.helpers.tiers import DEFAULT_TIER, LAST_TIERS, TESTS_DIR, TIERS, runs_last, tier_of

ROOT = Path(__file__).resolve().parents[2]


def test_a_test_takes_its_directory_s_tier() -> None:
    assert tier_of(TESTS_DIR / "unit" / "test_x.py") == "unit"
    assert tier_of(TESTS_DIR / "integration" / "test_x.py") == "integration"
    assert tier_of(TESTS_DIR / "e2e" / "test_x.py") == "e2e"
    assert tier_of(TESTS_DIR / "swarm" / "test_x.py") == "swarm"
    assert tier_of(TESTS_DIR / "test_top_level.py") == DEFAULT_TIER
    assert tier_of(TESTS_DIR / "elsewhere" / "test_x.py") == DEFAULT_TIER


def test_this_test_was_marked_by_the_collection_hook(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("unit") is not None
    assert request.node.get_closest_marker("integration") is None


def test_plain_pytest_runs_the_unit_tier_and_every_tier_is_a_marker() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    addopts = options["addopts"]
    assert addopts[addopts.index("-m") + 1] == DEFAULT_TIER
    declared = {marker.split(":", 1)[0] for marker in options["markers"]}
    assert set(TIERS.values()) <= declared


def test_scripts_test_selects_every_tier() -> None:
    found = re.search(r"^TIERS=(.+)$", (ROOT / "scripts" / "test").read_text(), re.M)
    assert found, "scripts/test names its tiers in TIERS"
    expression = shlex.split(found.group(1))[0]
    assert set(expression.split(" or ")) == set(TIERS.values())
    # Every directory of tests holding test files is a tier of its own.
    holding = {p.relative_to(TESTS_DIR).parts[0] for p in TESTS_DIR.rglob("test_*.py")}
    assert holding <= set(TIERS)


def test_no_two_test_modules_share_a_basename() -> None:
    # The tiers' directories are not packages: pytest imports each test module by its basename,
    # so a second module of the same name in another tier stops the whole collection.
    seen: dict[str, list[str]] = {}
    for path in TESTS_DIR.rglob("test_*.py"):
        seen.setdefault(path.name, []).append(str(path.relative_to(TESTS_DIR)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}


def test_the_swarm_tier_runs_after_the_others() -> None:
    # Its cluster is built by its first test: the other tiers must not wait behind it.
    assert LAST_TIERS == ("swarm",)
    files = [TESTS_DIR / tier / "test_x.py" for tier in ("e2e", "swarm", "unit", "workflows")]
    ordered = sorted(files, key=runs_last)
    assert [path.parent.name for path in ordered] == ["e2e", "unit", "workflows", "swarm"]
