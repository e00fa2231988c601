"""The runbook report, rendered from a recorded release (a golden file), and its edges.

The recorded release (golden/recorded-release-v1.15.2.json) is what the history, the backup
index and the checks' --json outputs hold after release 1.15.2 went to production. Set
UPDATE_GOLDEN=1 to rewrite the golden Markdown after a deliberate change, then read the diff.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deploytools.config import Config, load_config
from deploytools.steps import report
from deploytools.store.records import BackupManifest, ReleaseRecord, Verification
from tests.fakes.memory_store import MemoryStore

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
RECORDED = json.loads((GOLDEN / "recorded-release-v1.15.2.json").read_text())


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(ROOT / "deploy.toml")


def typed(recorded: dict[str, Any]) -> dict[str, Any]:
    """The recorded release's records, manifest and verification as the history reads them."""
    return {
        "records": [ReleaseRecord(**r) for r in recorded["records"]],
        "manifest": BackupManifest(**recorded["manifest"]),
        "verification": Verification(**recorded["verification"]),
        "staging_record": ReleaseRecord(**recorded["staging_record"]),
    }


def document(
    config: Config, recorded: dict[str, Any], tmp_path: Path, record_id: str = "0008"
) -> report.ReleaseDocument:
    for name, data in recorded["results"].items():
        (tmp_path / name).write_text(json.dumps(data))
    (tmp_path / "unrelated.json").write_text('{"ok": true, "result": {"hello": 1}}')
    evidence = report.load_evidence(tmp_path.glob("*.json"))
    read = typed(recorded)
    return report.build_document(
        config,
        environment=recorded["environment"],
        record=next(r for r in read["records"] if r.id == record_id),
        records=read["records"],
        manifest=read["manifest"],
        verification=read["verification"],
        evidence=evidence,
        staging_record=read["staging_record"],
    )


def deploy(recorded: dict[str, Any]) -> dict[str, Any]:
    """The release's deploy record (0008; 0007 is its migration, 0006 the release before)."""
    return next(r for r in recorded["records"] if r["id"] == "0008")


def test_markdown_matches_the_golden_file(config: Config, tmp_path: Path) -> None:
    markdown = report.render_markdown(document(config, RECORDED, tmp_path))
    golden = GOLDEN / "report-v1.15.2.md"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(markdown, encoding="utf-8")
    assert markdown == golden.read_text(encoding="utf-8")


def test_a_completed_release_leaves_nothing_to_be_determined(
    config: Config, tmp_path: Path
) -> None:
    doc = document(config, RECORDED, tmp_path)
    markdown = report.render_markdown(doc)
    assert "TBD" not in markdown
    assert doc.status == "passed"
    assert [m.status for m in doc.metrics] == ["met"] * 8
    assert {s.status for s in doc.steps} == {"passed", "not run"}  # not run: the rollback
    assert len(markdown.encode()) < 1024 * 1024


def test_the_rollback_command_is_exact_for_this_release(config: Config, tmp_path: Path) -> None:
    doc = document(config, RECORDED, tmp_path)
    # 1.15.2's migrations only add schema: back to 1.15.1 without a restore.
    assert doc.rollback_command == "deploytools rollback --env production --to 1.15.1"
    contract = copy.deepcopy(RECORDED)
    deploy(contract)["expand_only"] = False
    doc = document(config, contract, tmp_path)
    assert doc.rollback_command == (
        "deploytools rollback --env production --to 1.15.1 --restore-db"
    )
    assert "production-20260112T012112Z-9f3e" in doc.rollback_note


def test_the_first_release_has_nothing_to_roll_back_to(config: Config, tmp_path: Path) -> None:
    doc = document(config, RECORDED, tmp_path, record_id="0006")
    assert doc.rollback_command == ""
    assert "nothing to roll back to" in report.render_markdown(doc)


def test_a_rolled_back_release_says_so(config: Config, tmp_path: Path) -> None:
    recorded = copy.deepcopy(RECORDED)
    recorded["records"].append(
        {
            "id": "0009",
            "environment": "production",
            "kind": "rollback",
            "who": "oncall",
            "started": "2026-01-12T02:40:00Z",
            "finished": "2026-01-12T02:40:07Z",
            "image": recorded["records"][0]["image"],
            "version": "1.15.1",
            "previous": "0008",
            "outcome": "succeeded",
        }
    )
    doc = document(config, recorded, tmp_path)
    assert doc.status == "rolled back"
    rollback = next(s for s in doc.steps if s.name == "rollback-production")
    assert rollback.status == "passed" and rollback.duration_s == 7.0
    assert "rollback succeeded" in report.render_markdown(doc)


def test_without_results_metrics_say_not_measured_never_tbd(config: Config, tmp_path: Path) -> None:
    recorded = copy.deepcopy(RECORDED)
    recorded["results"] = {}
    doc = document(config, recorded, tmp_path)
    assert {m.measured for m in doc.metrics} == {"not measured"}
    assert {m.source for m in doc.metrics} == {"no results given"}
    markdown = report.render_markdown(doc)
    assert "TBD" not in markdown
    assert "not recorded: release verify's results were not given" in markdown


def test_a_failed_check_output_still_counts_as_evidence(config: Config, tmp_path: Path) -> None:
    recorded = copy.deepcopy(RECORDED)
    verify = recorded["results"]["verify-production.json"]["result"]
    verify["verdict"] = "fail"
    verify["results"][2] = {**verify["results"][2], "verdict": "fail", "measured": "p95 412 ms"}
    # What `deploytools --json verify` prints when a check fails: the report under the error.
    recorded["results"]["verify-production.json"] = {
        "ok": False,
        "error": {"type": "CheckFailed", "exit_code": 1, "facts": {"report": verify}},
    }
    del recorded["results"]["monitor-production.json"]
    doc = document(config, recorded, tmp_path)
    step = next(s for s in doc.steps if s.name == "verify-production")
    assert step.status == "failed" and step.duration_s == 28.0
    api = next(m for m in doc.metrics if m.metric == "API Response (p95)")
    assert (api.measured, api.status) == ("p95 412 ms", "missed")
    assert api.source == "api p95 on GET /documents (verify)"


def test_markdown_stays_under_a_mebibyte(config: Config, tmp_path: Path) -> None:
    recorded = copy.deepcopy(RECORDED)
    deploy(recorded)["notes"] = [f"note {i}: " + "x" * 400 for i in range(5000)]
    doc = document(config, recorded, tmp_path)
    markdown = report.render_markdown(doc)
    assert len(markdown.encode()) < 1024 * 1024
    assert "entries left out" in markdown


def test_json_holds_the_same_values(config: Config, tmp_path: Path) -> None:
    data = report.to_json(document(config, RECORDED, tmp_path))
    json.dumps(data)  # serialisable as is
    assert data["backup"]["sha256"] == RECORDED["manifest"]["sha256"]
    assert data["steps"][0]["name"] == "verify-release"
    assert data["rollback_command"].endswith("--to 1.15.1")


def test_report_command_line_parses() -> None:
    from deploytools.cli import cli

    result = CliRunner().invoke(cli, ["report", "--help"])
    assert result.exit_code == 0
    for option in ("--env", "--release", "--format", "--results"):
        assert option in result.output


# -- gather: which record, from the environment's history ---------------------------------------


@pytest.fixture
def stored(monkeypatch: pytest.MonkeyPatch, config: Config) -> dict[str, MemoryStore]:
    """Production and staging histories holding the recorded release, behind open_environment."""
    import contextlib
    from types import SimpleNamespace

    from deploytools import session as session_mod
    from deploytools.store.environment import EnvironmentStore

    stores = {"production": MemoryStore(), "staging": MemoryStore()}
    for record in RECORDED["records"]:
        stores["production"].write(
            f"production/releases/{record['id']}.json", json.dumps(record).encode()
        )
    staging = RECORDED["staging_record"]
    stores["staging"].write(f"staging/releases/{staging['id']}.json", json.dumps(staging).encode())
    manifest = RECORDED["manifest"]
    stores["production"].write(
        f"production/backups/{manifest['id']}.json", json.dumps(manifest).encode()
    )
    stores["production"].write(
        f"production/backups/{manifest['id']}.verified.json",
        json.dumps(RECORDED["verification"]).encode(),
    )

    @contextlib.contextmanager
    def open_environment(ctx: object, environment: str, *, read_only: bool = False):  # type: ignore[no-untyped-def]
        history = EnvironmentStore(stores[environment], environment, read_only=read_only)  # type: ignore[arg-type]
        yield SimpleNamespace(history=history)

    monkeypatch.setattr(session_mod, "open_environment", open_environment)
    return stores


def test_gather_reads_the_newest_record_and_its_backup(
    config: Config, stored: dict[str, MemoryStore], tmp_path: Path
) -> None:
    from deploytools.context import StepContext

    results = tmp_path / "results"
    results.mkdir()
    for name, data in RECORDED["results"].items():
        (results / name).write_text(json.dumps(data))
    doc = report.gather(
        StepContext(config=config), environment="production", results=[results, tmp_path / "none"]
    )
    assert doc == document(config, RECORDED, tmp_path / "results")


def test_gather_a_named_release_and_an_unknown_one(
    config: Config, stored: dict[str, MemoryStore]
) -> None:
    from deploytools.context import StepContext
    from deploytools.errors import UsageError

    ctx = StepContext(config=config)
    assert report.gather(ctx, environment="production", release_id="6").record_id == "0006"
    # The newest release is the newest deploy, not the migration before it nor a rollback.
    assert report.gather(ctx, environment="production").record_id == "0008"
    with pytest.raises(UsageError, match="no release 0042 in environment production"):
        report.gather(ctx, environment="production", release_id="0042")


def test_release_verifys_own_json_fills_the_verification_and_code_quality(
    config: Config, tmp_path: Path
) -> None:
    # The file a release job writes: `deploytools --json release verify` (verdict and reason,
    # the CI jobs read from GitHub), not a hand-made shape.
    from deploytools.github import CiJob
    from deploytools.jsonable import jsonable
    from deploytools.steps.release import CheckResult, CodeQuality, ReleaseReport

    verified = ReleaseReport(
        tag="v1.15.2", version="1.15.2", commit="5d41402abc4b" + "0" * 28,
        target_env="production", repository="/src", source_dir=".",
        checks=(
            CheckResult("tag-annotated", "passed", "v1.15.2 is an annotated tag"),
            CheckResult("github-code-quality", "failed", "ci.yml run 9 concluded failure"),
        ),
        code_quality=CodeQuality(
            "ci.yml run 9 (attempt 2) on 5d41402abc4b: failure",
            (CiJob("test", "success", 1104.0, "https://gh/job/1"),
             CiJob("dependency-audit", "failure", 52.0, "")),
            "https://gh/run/9",
        ),
    )  # fmt: skip
    recorded = copy.deepcopy(RECORDED)
    recorded["results"]["release-verify.json"] = {"ok": True, "result": jsonable(verified)}
    doc = document(config, recorded, tmp_path)
    assert [(r["name"], r["status"]) for r in doc.verification] == [
        ("tag-annotated", "passed"),
        ("github-code-quality", "failed"),
    ]
    assert doc.verification[1]["detail"] == "ci.yml run 9 concluded failure"
    markdown = report.render_markdown(doc)
    assert "| github-code-quality | ❌ failed | ci.yml run 9 concluded failure |" in markdown
    assert "### ❌ Code Quality Status" in markdown
    assert (
        "ci.yml run 9 (attempt 2) on 5d41402abc4b: failure ([workflow run](https://gh/run/9))"
        in markdown
    )
    assert "| [test](https://gh/job/1) | ✅ success | 18.4 min |" in markdown
    assert "| dependency-audit | ❌ failure | 52.0 s |" in markdown
    step = next(s for s in doc.steps if s.name == "verify-release")
    assert (step.status, step.detail) == ("failed", "2 checks, 1 failed")


def test_without_release_verify_the_code_quality_says_not_recorded(
    config: Config, tmp_path: Path
) -> None:
    recorded = copy.deepcopy(RECORDED)
    del recorded["results"]["release-verify.json"]
    markdown = report.render_markdown(document(config, recorded, tmp_path))
    assert "### Code Quality Status\n\nNot recorded: release verify's results were not" in markdown
