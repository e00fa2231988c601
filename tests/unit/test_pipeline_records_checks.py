"""`pipeline run`'s check suites are kept in the release record: the pipeline calls the same
`run_and_record` as `deploytools verify`, and that, with its default `save`, attaches the suite
to the environment's current release record (here through a real EnvironmentStore on a memory
store, the suite run against a fake service over real HTTP)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploytools.config import parse_config
from deploytools.context import StepContext
from deploytools.pipeline import walker
from deploytools.steps import check_suites, suite_record
from deploytools.store.environment import EnvironmentStore
from tests.fakes.memory_store import MemoryStore
from tests.fakes.rbac_service import CONFIG, ENVIRON, FakeState, fake_service
from tests.helpers.records import record


def test_the_pipeline_s_verify_lands_in_the_current_release_record(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    history = EnvironmentStore(MemoryStore(), "local")  # type: ignore[arg-type]
    history.save_release(record("0001"))

    @contextlib.contextmanager
    def opened(ctx: Any, environment: str, **_: Any) -> Iterator[Any]:
        assert environment == "local"
        yield SimpleNamespace(history=history)

    monkeypatch.setattr(suite_record, "open_environment", opened)
    state = FakeState(users={"root": ("admin-password-123", ["admin"])})
    with fake_service(state) as url:
        config = parse_config(CONFIG.replace("BASE_URL", url), tmp_path / "deploy.toml")
        # What `pipeline run` calls for its verify step, with the defaults it leaves.
        run = walker.PipelineSteps().check_suite
        report = run(StepContext(config), environment="local", suite="verify", environ=ENVIRON)
    assert report.recorded == "saved in release record 0001 of local"
    (kept,) = history.releases()[0].checks
    assert kept["suite"] == "verify" and kept["environment"] == "local"
    assert [c["name"] for c in kept["results"]] == [r.name for r in report.results]
    assert check_suites.run_and_record is run
