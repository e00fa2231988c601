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
}
#: The tier of a test outside those directories, and the one a plain `pytest` runs.
DEFAULT_TIER = "unit"


def tier_of(path: Path) -> str:
    """The tier of a test file: its first directory under tests/, else the default."""
    try:
        parts = path.resolve().relative_to(TESTS_DIR).parts
    except ValueError:
        return DEFAULT_TIER
    return TIERS.get(parts[0], DEFAULT_TIER) if len(parts) > 1 else DEFAULT_TIER
