"""The runbook as data: the order of the steps, the one gate, the command lines they fill in."""

from __future__ import annotations

import pytest

from deploytools import pipeline
from deploytools.errors import UsageError


def test_the_runbook_order() -> None:
    assert [s.name for s in pipeline.STEPS] == [
        "verify-release",
        "build-image",
        "deploy-staging",
        "smoke-staging",
        "validate-staging",
        "approve-production",
        "backup-production",
        "migrate-production",
        "deploy-production",
        "verify-production",
        "monitor-production",
    ]
    numbers = [s.runbook_step for s in pipeline.STEPS]
    assert numbers == sorted(numbers)


def test_one_gate_and_nothing_reaches_production_before_it() -> None:
    gate = pipeline.approval_gate()
    assert gate.name == "approve-production" and gate.environment == pipeline.PRODUCTION
    before = pipeline.STEPS[: pipeline.STEPS.index(gate)]
    assert all(not s.production for s in before)
    assert all(s.production for s in pipeline.after(gate.name))


def test_a_step_fills_in_what_earlier_steps_handed_over() -> None:
    image = "ghcr.io/example/rbac-api@sha256:" + "0" * 64
    assert pipeline.step("deploy-production").argv({"image": image}) == [
        "deploy", "--env", "production", "--image", image, "--yes",
    ]  # fmt: skip
    assert pipeline.step("build-image").argv({"tag": "v1.15.2"}) == [
        "image", "build", "--tag", "v1.15.2", "--push",
    ]  # fmt: skip
    with pytest.raises(UsageError, match="needs image"):
        pipeline.step("migrate-production").argv({"tag": "v1.15.2"})


def test_every_step_after_the_build_takes_the_image_by_digest_not_by_tag() -> None:
    build = pipeline.STEPS.index(pipeline.step("build-image"))
    for step in pipeline.STEPS[build + 1 :]:
        assert "tag" not in step.needs, step.name


def test_unknown_placeholders_and_steps_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown placeholders"):
        pipeline.Step("x", "x", 1, ("deploy", "--image", "{img}"), None)
    with pytest.raises(UsageError, match="no pipeline step"):
        pipeline.step("deploy-prod")


def test_rollback_follows_only_a_failed_verification() -> None:
    assert pipeline.ROLLBACK.production and "--yes" in pipeline.ROLLBACK.command
    assert pipeline.ROLLBACK_WHEN_FAILED == ("verify-production",)
