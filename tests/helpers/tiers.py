"""The suite's tiers: a pytest marker per directory under tests/ (tests/conftest.py marks every
test with its directory's tier). A new tier is a directory, an entry in TIERS, a marker in
pyproject.toml and a name in scripts/test's TIERS."""

from __future__ import annotations

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
#: Directory under tests/ -> the tier (marker) of every test in it.
TIERS = {
    "unit": "unit",
    "integration": "integration",
    "e2e": "e2e",
    "workflows": "workflows",
    "swarm": "swarm",
}
#: Tiers that run after every other one in a session (tests/conftest.py orders the tests): the
#: swarm tier builds a cluster of docker-in-docker nodes that would slow the tiers beside it.
LAST_TIERS = ("swarm",)
#: The tier of a test outside those directories, and the one a plain `pytest` runs.
DEFAULT_TIER = "unit"


def runs_last(path: Path) -> bool:
    """Whether a test file's tier is one of LAST_TIERS."""
    return tier_of(path) in LAST_TIERS


def tier_of(path: Path) -> str:
    """The tier of a test file: its first directory under tests/, else the default."""
    try:
        parts = path.resolve().relative_to(TESTS_DIR).parts
    except ValueError:
        return DEFAULT_TIER
    return TIERS.get(parts[0], DEFAULT_TIER) if len(parts) > 1 else DEFAULT_TIER
