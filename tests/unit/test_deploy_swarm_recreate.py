"""The Swarm recreate strategy without a cluster: which strategy a Swarm deploy takes
(deploy_strategy.choose_on_swarm), and deploy_swarm_recreate's path with fakes: the order of
stop, migration and start, and what each failure leaves (the old image at its replicas, the
data restored only after a migration not expand-only)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from deploytools.errors import CheckFailed, DeployError, ExternalCommandFailed
from deploytools.steps import deploy_strategy, deploy_swarm, deploy_swarm_recreate
from deploytools.steps.app_service import MigrationFailed
from deploytools.steps.migrate import ImageInfo
from deploytools.store.records import ReleaseRecord

OLD, NEW = "app:1", "app:2"


def info(expand_only: bool | None) -> ImageInfo:
    return ImageInfo(ref=NEW, id="sha256:2", version="2", expand_only=expand_only)


@pytest.mark.parametrize(
    ("asked", "expand_only", "serving", "strategy"),
    [
        ("auto", False, True, "recreate"),  # contracting: the old tasks must not read it
        ("auto", None, True, "recreate"),  # not labelled: not known to be safe
        ("auto", True, True, "rolling"),
        ("recreate", True, True, "recreate"),  # taken as asked
        ("rolling", False, True, "rolling"),  # taken as asked: the rolling path refuses it
        ("auto", False, False, "rolling"),  # a first deploy: nothing to stop
        ("recreate", False, False, "rolling"),
    ],
)
def test_which_strategy_a_swarm_deploy_takes(
    asked: str, expand_only: bool | None, serving: bool, strategy: str
) -> None:
    choice = deploy_strategy.choose_on_swarm(asked, info(expand_only), serving=serving)
    assert (choice.asked, choice.strategy) == (asked, strategy)
    if asked == "auto" and strategy == "recreate":
        assert "expand-only" in choice.reason


def test_rolling_asked_for_a_release_not_expand_only_is_still_refused() -> None:
    platform: Any = SimpleNamespace(name="prod")
    with pytest.raises(deploy_swarm.UsageError, match="declared NOT expand-only") as raised:
        deploy_swarm.refuse_unless_expand_only(platform, info(False), serving=True)
    assert "--strategy recreate" in (raised.value.hint or "")
    deploy_swarm.refuse_unless_expand_only(platform, info(False), serving=False)


class History:
    def __init__(self) -> None:
        self.saved: list[ReleaseRecord] = []

    def current_release(self) -> None:
        return None

    def releases(self) -> list[ReleaseRecord]:
        return []

    def next_release_id(self) -> str:
        return "0007"

    def save_release(self, record: ReleaseRecord) -> None:
        self.saved.append(record)


class World:
    """The fakes of one deploy: what was called, in order, and the database's revision."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, failing: set[str]) -> None:
        self.calls: list[str] = []
        self.schema = "0002"
        self.failing = failing
        self.history = History()
        config = SimpleNamespace(
            project=SimpleNamespace(app_service="app"),
            deploy=SimpleNamespace(health_timeout_s=5.0),
        )
        self.platform: Any = SimpleNamespace(
            name="prod",
            config=config,
            environment=None,
            manager=None,
            swarm=SimpleNamespace(service=lambda name: SimpleNamespace(image=OLD)),
            service_name=lambda s: f"st_{s}",
            stop=self.stop,
            nodes=lambda: [],
        )
        self.session: Any = SimpleNamespace(
            history=self.history,
            ctx=SimpleNamespace(config=config),
            progress=lambda message: None,
            refresh_lock=lambda: None,
        )
        module = deploy_swarm_recreate
        monkeypatch.setattr(module.Database, "of", lambda platform: self)
        monkeypatch.setattr(deploy_swarm, "all_run", lambda platform, image: False)
        monkeypatch.setattr(deploy_swarm, "replicas", lambda platform: 3)
        monkeypatch.setattr(deploy_swarm, "proxy_spec", lambda platform, resolved: None)
        monkeypatch.setattr(module.backup_step, "ensure_pre_deploy", self.backup)
        monkeypatch.setattr(module.backup_step, "restore_in", self.restore)
        monkeypatch.setattr(module.maintenance, "announced_in", lambda config, env: False)
        monkeypatch.setattr(module.proxy_settings, "resolve", lambda config, env: None)
        monkeypatch.setattr(module.proxy_swarm, "ensure_running", lambda *a, **k: None)
        monkeypatch.setattr(module.migrate_step, "run_in", self.migrate)
        monkeypatch.setattr(module.migrate_step, "output_tail", lambda facts, config: "")
        monkeypatch.setattr(module, "start", self.start)
        monkeypatch.setattr(module, "watch", self.watch)

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if name in self.failing:
            raise ExternalCommandFailed(f"{name} failed")

    def revision(self) -> str:
        return self.schema

    def backup(self, session: Any, current: Any, no_backup_check: bool) -> str:
        self._step("backup")
        return "b1"

    def restore(self, session: Any, backup_id: str, **kwargs: Any) -> None:
        self.calls.append(f"restore {backup_id}")
        self.schema = "0002"

    def stop(self, services: list[str], *, what: str) -> None:
        self._step(f"stop {','.join(services)}")

    def migrate(self, session: Any, *, image: str, no_backup_check: bool) -> Any:
        self._step("migrate")
        self.schema = "0003"
        return SimpleNamespace(revision_after="0003")

    def start(self, platform: Any, image: str, replicas: int) -> Any:
        self.calls.append(f"start {image} x{replicas}")
        return SimpleNamespace(image=image)

    def watch(self, session: Any, platform: Any, update: Any, resolved: Any, n: int) -> None:
        self.calls.append(f"watch {update.image}")
        if f"watch {update.image}" in self.failing:
            raise CheckFailed(f"a new task of st_app ({update.image}) failed: unhealthy")

    def deploy(self, expand_only: bool | None = False) -> deploy_swarm.SwarmDeployResult:
        choice = deploy_strategy.choose_on_swarm("auto", info(expand_only), serving=True)
        return deploy_swarm_recreate.deploy(
            self.session, self.platform, info(expand_only), choice=choice, no_backup_check=False
        )

    @property
    def record(self) -> ReleaseRecord:
        return self.history.saved[-1]


def test_the_app_stops_before_the_migration_and_the_new_image_starts_at_its_replicas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World(monkeypatch, failing=set())
    done = world.deploy()
    assert world.calls == ["backup", "stop app", "migrate", f"start {NEW} x3", f"watch {NEW}"]
    assert done.changed and done.record is world.record
    record = world.record
    assert (record.outcome, record.strategy, record.strategy_asked) == (
        "succeeded",
        "swarm-recreate",
        "auto",
    )
    assert (record.revision_before, record.revision_after, record.backup_id) == (
        "0002",
        "0003",
        "b1",
    )
    # Timed as one engine's recreate: the next maintenance window says how long it was down.
    assert {"stop", "migrate", "start", "healthy"} <= set(record.timings)


def test_a_backup_that_fails_stops_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(monkeypatch, failing={"backup"})
    with pytest.raises(DeployError) as raised:
        world.deploy()
    assert world.calls == ["backup"]
    assert f"nothing was stopped: {OLD} serves" in (raised.value.untouched or "")
    assert world.record.outcome == "failed"


def test_a_failed_migration_brings_the_old_image_back_without_a_restore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World(monkeypatch, failing={"migrate"})
    with pytest.raises(MigrationFailed) as raised:
        world.deploy()
    assert world.calls == [
        "backup",
        "stop app",
        "migrate",
        "stop app",
        f"start {OLD} x3",
        f"watch {OLD}",
    ]
    assert raised.value.untouched == f"{OLD} serves again at 3 replicas; the schema is unchanged"
    assert raised.value.facts["release"] == "0007"
    assert world.record.outcome == "failed"


@pytest.mark.parametrize(("expand_only", "restored"), [(False, True), (None, False)])
def test_an_unhealthy_release_is_stopped_the_data_restored_when_not_expand_only(
    monkeypatch: pytest.MonkeyPatch, expand_only: bool | None, restored: bool
) -> None:
    world = World(monkeypatch, failing={f"watch {NEW}"})
    with pytest.raises(CheckFailed) as raised:
        world.deploy(expand_only)
    restore = ["restore b1"] if restored else []
    assert world.calls == [
        "backup",
        "stop app",
        "migrate",
        f"start {NEW} x3",
        f"watch {NEW}",
        "stop app",
        *restore,
        f"start {OLD} x3",
        f"watch {OLD}",
    ]
    left = raised.value.untouched or ""
    assert left.startswith(f"{OLD} serves again at 3 replicas; ")
    if restored:
        assert "database restored from b1" in left
        assert world.record.restored_backup == "b1"
    else:
        assert "keeps the migrated schema (0003)" in left
    assert raised.value.message.startswith(f"deploy of {NEW} to prod failed: a new task")
    assert world.record.outcome == "rolled-back"


def test_an_old_release_that_does_not_come_back_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(monkeypatch, failing={f"watch {NEW}", f"watch {OLD}"})
    with pytest.raises(CheckFailed) as raised:
        world.deploy()
    assert (raised.value.untouched or "").startswith("the old release did NOT come back: ")
    assert "database restored from b1" in (raised.value.untouched or "")
    assert world.record.outcome == "failed"
