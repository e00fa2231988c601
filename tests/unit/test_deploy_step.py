"""The parts of deploy, migrate and rollback that need no engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.errors import UsageError
from deploytools.steps import app_service
from deploytools.steps import deploy as deploy_step
from deploytools.steps.migrate import _failure_line
from deploytools.store.records import ReleaseRecord

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


class _Images:
    """The engine's images: reference -> image ID."""

    def __init__(self, present: dict[str, str]) -> None:
        self.present = present

    def get(self, ref: str) -> object:
        import docker.errors

        if ref not in self.present:
            raise docker.errors.ImageNotFound(f"no such image: {ref}")
        from types import SimpleNamespace

        return SimpleNamespace(id=self.present[ref])


def _session_with_images(present: dict[str, str]) -> deploy_step.EnvSession:
    from types import SimpleNamespace
    from typing import Any, cast

    ctx = StepContext(config=load_config(REPO_ROOT / "deploy.toml"))
    target = SimpleNamespace(client=SimpleNamespace(images=_Images(present)))
    return cast(Any, SimpleNamespace(ctx=ctx, target=target))


def _record(image: str, image_id: str) -> ReleaseRecord:
    return ReleaseRecord(
        id="0003", environment="production", kind="rollback", who="ci",
        started="2026-11-27T01:00:00Z", image=image, image_id=image_id,
    )  # fmt: skip


KEEP = "ghcr.io/example/rbac-api:production-release-0003"


def test_a_rollback_target_prefers_its_keep_tag() -> None:
    session = _session_with_images(
        {KEEP: "sha256:abc", "x:1": "sha256:abc", "sha256:abc": "sha256:abc"}
    )
    assert app_service.keep_ref(session, _record("x:1", "sha256:abc")) == KEEP


def test_without_a_keep_tag_the_deployed_reference_if_it_still_names_the_image() -> None:
    session = _session_with_images({"x:1": "sha256:abc", "sha256:abc": "sha256:abc"})
    assert app_service.keep_ref(session, _record("x:1", "sha256:abc")) == "x:1"


def test_a_moved_tag_is_not_used_the_image_id_is() -> None:
    session = _session_with_images({"x:1": "sha256:new", "sha256:abc": "sha256:abc"})
    assert app_service.keep_ref(session, _record("x:1", "sha256:abc")) == "sha256:abc"


def test_a_pruned_keep_tag_falls_back_to_the_image_id_not_a_pull() -> None:
    # A rollback record holds another release's keep tag as its image; once that tag is pruned,
    # the image (still tagged otherwise) is found by its ID instead of being pulled.
    pruned = "ghcr.io/example/rbac-api:production-release-0001"
    session = _session_with_images({"sha256:abc": "sha256:abc"})
    assert app_service.keep_ref(session, _record(pruned, "sha256:abc")) == "sha256:abc"


def test_with_neither_tag_nor_id_the_deployed_reference_is_used() -> None:
    session = _session_with_images({})
    assert app_service.keep_ref(session, _record("ghcr.io/x:1", "sha256:gone")) == "ghcr.io/x:1"
