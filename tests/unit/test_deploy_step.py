"""The parts of deploy, migrate and rollback that need no engine."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.errors import UsageError
from deploytools.steps import app_service
from deploytools.steps import deploy as deploy_step
from deploytools.steps import migrate as migrate_step
from deploytools.steps.migrate import _failure_line
from deploytools.store.environment import EnvironmentStore
from deploytools.store.records import ReleaseRecord
from tests.fakes.memory_store import MemoryStore

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_an_unknown_strategy_is_refused_before_anything_is_touched() -> None:
    ctx = StepContext(config=load_config(REPO_ROOT / "deploy.toml"))
    with pytest.raises(UsageError, match='unknown deploy strategy "blue-green"') as caught:
        deploy_step.run(ctx, environment="staging", image="x", strategy="blue-green")
    assert caught.value.untouched == "nothing was done"
    assert "recreate" in (caught.value.hint or "")


def test_each_strategy_is_made_by_its_name_and_the_cli_offers_exactly_them() -> None:
    from deploytools.cli.deploy_cmd import deploy

    made = {name: make().name for name, make in deploy_step.STRATEGIES.items()}
    assert made == {"recreate": "recreate", "rolling": "rolling"}
    [option] = [p for p in deploy.params if p.name == "strategy"]
    # and "auto", which picks one of them (test_deploy_strategy.py)
    assert set(option.type.choices) == {"auto", *deploy_step.STRATEGIES}  # type: ignore[attr-defined]


class _Target:
    """A target whose starts and stops (Compose runs) are only written down, by what they do."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def compose(self, build: object, *, env: object = None, what: str = "") -> None:
        self.events.append(what)

    def start(self, services: object, *, env: object = None, what: str = "") -> None:
        self.events.append(what)

    def stop(self, services: object, *, what: str = "") -> None:
        self.events.append(what)

    def running(self, service: str) -> list[object]:
        return []


def _recreate(
    monkeypatch: pytest.MonkeyPatch, migrate: Exception | None = None
) -> tuple[list[str], ReleaseRecord, EnvironmentStore]:
    """RecreateStrategy.replace over a target that records its Compose runs; the migration
    and the health wait (their own tests cover them) only write down that they ran."""
    events: list[str] = []

    def run_in(session: object, **kwargs: object) -> object:
        events.append("migrate")
        if migrate is not None:
            raise migrate
        return SimpleNamespace(revision_after="0002")

    monkeypatch.setattr(migrate_step, "run_in", run_in)
    monkeypatch.setattr(deploy_step, "wait_app_healthy", lambda session: events.append("healthy"))
    ctx = StepContext(config=load_config(REPO_ROOT / "deploy.toml"))
    history = EnvironmentStore(MemoryStore(), "production")  # type: ignore[arg-type]
    session: Any = SimpleNamespace(
        ctx=ctx,
        target=_Target(events),
        history=history,
        progress=lambda m: None,
        refresh_lock=lambda: None,
    )
    record = _record("ghcr.io/x:2", "sha256:new")
    record.kind = "deploy"
    strategy = deploy_step.RecreateStrategy()
    strategy.replace(session, record, deploy_step.Phases(session, record))
    return events, record, history


def test_recreate_stops_migrates_starts_and_waits_in_that_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, record, history = _recreate(monkeypatch)
    assert events == ["stopping the app", "migrate", "starting the app with ghcr.io/x:2", "healthy"]
    assert record.revision_after == "0002"
    assert list(record.timings) == ["stop", "migrate", "start", "healthy"]
    # Each phase is saved as it ends, so a killed deploy leaves its progress in the record.
    [saved] = history.releases()
    assert saved.revision_after == "0002" and saved.timings == record.timings


def test_a_failed_migration_under_recreate_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(deploy_step.MigrationFailed, match="value too long") as failed:
        _recreate(monkeypatch, migrate=UsageError("value too long", hint="shorten it"))
    assert failed.value.hint == "shorten it"


def test_the_migration_failure_line_is_alembics_not_composes() -> None:
    facts = {
        "stderr": "Creating x_app_run ... done\nINFO  [alembic] Context impl\n"
        "ERROR [alembic.util.messaging] Can't locate revision identified by '0002'\n255\n",
        "stdout": "FAILED: Can't locate revision identified by '0002'\n",
    }
    assert _failure_line(facts) == "FAILED: Can't locate revision identified by '0002'"
    assert _failure_line({"stderr": "255\n"}) is None


class _Engine:
    """The engine's images: reference -> image ID."""

    def __init__(self, present: dict[str, str]) -> None:
        self.present = present

    def image(self, ref: str) -> object:
        from types import SimpleNamespace

        from deploytools.engine.errors import ImageNotFound

        if ref not in self.present:
            raise ImageNotFound(f"no such image: {ref}")
        return SimpleNamespace(id=self.present[ref])


def _session_with_images(present: dict[str, str]) -> deploy_step.EnvSession:
    from types import SimpleNamespace
    from typing import Any, cast

    ctx = StepContext(config=load_config(REPO_ROOT / "deploy.toml"))
    target = SimpleNamespace(engine=_Engine(present))
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
