"""`image verify --tested-in ENV`: the image on the engine is the one ENV's release records say
passed there. Over a fake engine and a fake history (the real ones: tests/integration)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
from click.testing import CliRunner

from deploytools.cli import cli
from deploytools.context import StepContext
from deploytools.errors import CheckFailed, UsageError
from deploytools.steps import image as image_step
from deploytools.store.records import ReleaseRecord
from deploytools.target import REVISION_LABEL, VERSION_LABEL

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTED = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
DIGEST = "sha256:" + "c" * 64
LABELS = {
    VERSION_LABEL: "1.15.2",
    REVISION_LABEL: "0123abcd",
    image_step.CREATED_LABEL: "2026-11-01T00:00:00Z",
    image_step.SOURCE_LABEL: "https://example.invalid/rbac-api",
}


def record(
    number: int,
    image_id: str,
    *,
    version: str = "1.15.2",
    outcome: str = "succeeded",
    kind: str = "deploy",
    image: str = "rbac-api:1.15.2",
) -> ReleaseRecord:
    return ReleaseRecord(
        id=f"{number:04d}",
        environment="staging",
        kind=kind,
        who="test",
        started="2026-11-27T00:00:00Z",
        image=image,
        image_id=image_id,
        version=version,
        outcome=outcome,
    )


# -- which record counts ----------------------------------------------------------------------


def test_the_newest_succeeded_deploy_of_the_version_counts() -> None:
    records = [
        record(1, OTHER),
        record(2, TESTED),
        record(3, OTHER, version="1.15.3"),
        record(4, OTHER, outcome="failed"),
        record(5, OTHER, outcome="rolled-back"),
        record(6, OTHER, kind="rollback"),
        record(7, OTHER, kind="migrate"),
    ]
    found = image_step.tested_record(records, "1.15.2")
    assert found is not None and found.id == "0002"


def test_no_succeeded_deploy_of_the_version_is_none() -> None:
    records = [record(1, TESTED, version="1.15.1"), record(2, TESTED, outcome="failed")]
    assert image_step.tested_record(records, "1.15.2") is None
    assert image_step.tested_record([], "1.15.2") is None


# -- the comparison ---------------------------------------------------------------------------


def check(image_id: str, rec: ReleaseRecord | None, **kw: Any) -> image_step.CheckResult:
    args: dict[str, Any] = {
        "image_id": image_id,
        "repo_digests": (),
        "record": rec,
        "version": "1.15.2",
        "tested_in": "staging",
        "digest_given": False,
    }
    return image_step.tested_check(**{**args, **kw})


def test_same_image_id_passes() -> None:
    result = check(TESTED, record(2, TESTED))
    assert result.verdict == "passed"
    assert TESTED in result.reason and "0002" in result.reason


def test_another_image_id_fails_naming_both() -> None:
    result = check(OTHER, record(2, TESTED))
    assert result.verdict == "failed"
    assert OTHER in result.reason and TESTED in result.reason
    assert "staging" in result.reason


def test_never_deployed_fails_unless_a_digest_was_given() -> None:
    failed = check(TESTED, None)
    assert failed.verdict == "failed"
    assert "never deployed to staging" in failed.reason
    skipped = check(TESTED, None, digest_given=True)
    assert skipped.verdict == "skipped"
    assert "--expect-digest" in skipped.reason


def test_a_record_without_an_id_falls_back_on_its_registry_digest() -> None:
    pinned = record(2, "", image=f"ghcr.io/acme/rbac-api@{DIGEST}")
    passed = check(TESTED, pinned, repo_digests=(f"ghcr.io/acme/rbac-api@{DIGEST}",))
    assert passed.verdict == "passed"
    failed = check(TESTED, pinned, repo_digests=(f"ghcr.io/acme/rbac-api@{OTHER}",))
    assert failed.verdict == "failed" and DIGEST in failed.reason
    nothing = check(TESTED, record(2, "", image="rbac-api:1.15.2"))
    assert nothing.verdict == "failed" and "no image ID or digest" in nothing.reason


# -- verify() and the CLI over a fake engine -------------------------------------------------


class FakeImage:
    def __init__(self, image_id: str) -> None:
        self.id = image_id
        self.labels = dict(LABELS)
        self.attrs: dict[str, Any] = {"RepoDigests": []}


class FakeEngine:
    """The engine's images, as `deploytools.engine.Engine` answers for them."""

    def __init__(self, images: dict[str, FakeImage]) -> None:
        self.images = images

    def find_image(self, ref: str) -> FakeImage | None:
        return self.images.get(ref)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeImage]:
    """The production engine: the image references it holds (fill in per test)."""
    images: dict[str, FakeImage] = {}
    client = FakeEngine(images)

    def fake_engine(ctx: Any, environment: str | None) -> tuple[Any, str]:
        return client, f"environment {environment}"

    monkeypatch.setattr(image_step, "_engine", fake_engine)
    return images


class FakeHistory:
    def __init__(self, records: list[ReleaseRecord]) -> None:
        self.records = records
        self.asked: list[str] = []

    def __call__(self, ctx: Any, environment: str) -> list[ReleaseRecord]:
        self.asked.append(environment)
        return self.records


CTX = cast(StepContext, None)


def test_verify_passes_for_the_image_staging_ran(engine: dict[str, FakeImage]) -> None:
    engine["rbac-api:1.15.2"] = FakeImage(TESTED)
    history = FakeHistory([record(1, OTHER, outcome="failed"), record(2, TESTED)])
    report = image_step.verify(
        CTX,
        image="rbac-api:1.15.2",
        expect_version="1.15.2",
        environment="production",
        tested_in="staging",
        records_of=history,
    )
    assert report.ok, report.checks
    assert history.asked == ["staging"]
    assert [c.name for c in report.checks][-1] == image_step.TESTED_CHECK


def test_verify_fails_for_a_rebuilt_image(engine: dict[str, FakeImage]) -> None:
    engine["rbac-api:1.15.2"] = FakeImage(OTHER)  # same tag and labels, another build
    report = image_step.verify(
        CTX,
        image="rbac-api:1.15.2",
        expect_version="1.15.2",
        environment="production",
        tested_in="staging",
        records_of=FakeHistory([record(2, TESTED)]),
    )
    assert [c.name for c in report.failed] == [image_step.TESTED_CHECK]
    with pytest.raises(CheckFailed) as raised:
        report.raise_if_failed()
    assert raised.value.exit_code == 1
    assert "tested-in" in (raised.value.hint or "")


def test_verify_without_tested_in_reads_no_history(engine: dict[str, FakeImage]) -> None:
    engine["rbac-api:1.15.2"] = FakeImage(OTHER)
    history = FakeHistory([record(2, TESTED)])
    report = image_step.verify(
        CTX, image="rbac-api:1.15.2", expect_version="1.15.2", records_of=history
    )
    assert report.ok
    assert history.asked == []
    assert image_step.TESTED_CHECK not in [c.name for c in report.checks]


def test_a_missing_image_skips_the_tested_check(engine: dict[str, FakeImage]) -> None:
    report = image_step.verify(
        CTX,
        image="rbac-api:1.15.2",
        expect_version="1.15.2",
        environment="production",
        tested_in="staging",
        records_of=FakeHistory([record(2, TESTED)]),
    )
    verdicts = {c.name: c.verdict for c in report.checks}
    assert verdicts["image-exists"] == "failed"
    assert verdicts[image_step.TESTED_CHECK] == "skipped"


def test_tested_in_the_checked_environment_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        image_step.verify(
            CTX,
            image="rbac-api:1.15.2",
            expect_version="1.15.2",
            environment="staging",
            tested_in="staging",
        )


def invoke(*args: str) -> Any:
    config = str(REPO_ROOT / "deploy.toml")
    return CliRunner().invoke(cli, ["--config", config, *args], catch_exceptions=False)


def test_cli_names_both_ids_and_exits_1(
    engine: dict[str, FakeImage], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine["rbac-api:1.15.2"] = FakeImage(OTHER)
    history = FakeHistory([record(2, TESTED)])
    monkeypatch.setattr(image_step, "history_records", history)
    args = ("image", "verify", "rbac-api:1.15.2", "--expect-version", "1.15.2")
    result = invoke(*args, "--env", "production", "--tested-in", "staging")
    assert result.exit_code == 1
    line = next(x for x in result.output.splitlines() if image_step.TESTED_CHECK in x)
    assert line.startswith("failed") and OTHER in line and TESTED in line
    assert history.asked == ["staging"]


def test_cli_never_deployed_fails_unless_expect_digest(
    engine: dict[str, FakeImage], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine["rbac-api:1.15.2"] = FakeImage(TESTED)
    monkeypatch.setattr(image_step, "history_records", FakeHistory([]))
    args = ("image", "verify", "rbac-api:1.15.2", "--expect-version", "1.15.2")
    args += ("--env", "production", "--tested-in", "staging")
    failed = invoke("--json", *args)
    assert failed.exit_code == 1
    assert "never deployed to staging" in failed.output
    assert json.loads(failed.stdout)["ok"] is False
    passed = invoke(*args, "--expect-digest", TESTED)
    assert passed.exit_code == 0, passed.output
    assert "skipped image-tested" in passed.output.replace("  ", " ")
