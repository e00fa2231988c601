"""The parts of deploy, migrate and rollback that need no engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.errors import UsageError
from deploytools.steps import deploy as deploy_step
from deploytools.steps.migrate import _failure_line

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_an_unknown_strategy_is_refused_before_anything_is_touched() -> None:
    ctx = StepContext(config=load_config(REPO_ROOT / "deploy.toml"))
    with pytest.raises(UsageError, match='unknown deploy strategy "blue-green"') as caught:
        deploy_step.run(ctx, environment="staging", image="x", strategy="blue-green")
    assert caught.value.untouched == "nothing was done"
    assert "recreate" in (caught.value.hint or "")


def test_recreate_is_a_strategy_and_strategies_are_pluggable() -> None:
    strategy = deploy_step.STRATEGIES["recreate"]()
    assert strategy.name == "recreate"
    assert callable(strategy.replace)


def test_the_migration_failure_line_is_alembics_not_composes() -> None:
    facts = {
        "stderr": "Creating x_app_run ... done\nINFO  [alembic] Context impl\n"
        "ERROR [alembic.util.messaging] Can't locate revision identified by '0002'\n255\n",
        "stdout": "FAILED: Can't locate revision identified by '0002'\n",
    }
    assert _failure_line(facts) == "FAILED: Can't locate revision identified by '0002'"
    assert _failure_line({"stderr": "255\n"}) is None
