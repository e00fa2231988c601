"""The runbook report's "API Response (p95)" row is never filled from a latency check on a
health route: a health route's speed is not the API's."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from deploytools.config import Config, LatencyCheck, load_config
from deploytools.steps.report.document import metric_sources
from tests.unit.test_report import RECORDED, ROOT, document


def with_latency(config: Config, *checks: LatencyCheck) -> Config:
    """`config` whose p95 comes only from these latency checks (no metric rule)."""
    only = dataclasses.replace(config.checks, latency=checks, metrics=())
    return dataclasses.replace(config, checks=only)


def test_a_latency_check_on_the_health_route_does_not_fill_the_api_row(tmp_path: Path) -> None:
    config = with_latency(load_config(ROOT / "deploy.toml"), LatencyCheck("/health", "api p95"))
    assert metric_sources(config)["api_p95_ms"] == []
    doc = document(config, copy.deepcopy(RECORDED), tmp_path)
    row = next(m for m in doc.metrics if m.metric == "API Response (p95)")
    assert (row.measured, row.status) == ("not measured", "not measured")
    assert row.source == "no check measures it (api p95 times a health route, not the API)"


def test_a_latency_check_on_an_api_route_fills_it_and_names_its_route(tmp_path: Path) -> None:
    repo = load_config(ROOT / "deploy.toml")
    config = with_latency(repo, *repo.checks.latency)
    assert "api p95" in metric_sources(config)["api_p95_ms"]
    doc = document(config, copy.deepcopy(RECORDED), tmp_path)
    row = next(m for m in doc.metrics if m.metric == "API Response (p95)")
    assert row.status == "met"
    assert row.source == "api p95 on GET /documents (verify)"
