"""Check results kept in the release record (suite_record.py, EnvironmentStore.attach_checks), the
report reading them when no --results are given, and the reason a rollback records."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploytools import session as session_mod
from deploytools.checks.results import CheckResult, Verdict
from deploytools.config import load_config, parse_config
from deploytools.context import StepContext
from deploytools.errors import DeadlineExceeded, EnvironmentUnreachable
from deploytools.steps import incident, monitor, report, suite_record
from deploytools.steps import rollback as rollback_step
from deploytools.store.environment import EnvironmentStore
from deploytools.store.records import BackupManifest, ReleaseRecord, Verification
from deploytools.store.releases import CHECKS_KEPT
from tests.fakes.memory_store import MemoryStore
from tests.fakes.rbac_service import CONFIG, ENVIRON, FakeState, fake_service
from tests.helpers.records import record

ROOT = Path(__file__).resolve().parents[2]
#: A release's records, manifest and check results as stored (the report's golden input).
RECORDED = json.loads(
    (Path(__file__).parent / "golden" / "recorded-release-v1.15.2.json").read_text()
)
RESULTS = [
    CheckResult("health", Verdict.PASS, "12 ms", "< 100 ms", data={"samples": [12]}),
    CheckResult("rbac viewer POST /users", Verdict.FAIL, "status 201", "status 403", "allowed"),
]


def summary(suite: str = "verify", environment: str = "prod", **extra: Any) -> dict[str, Any]:
    return suite_record.summary(
        suite=suite,
        environment=environment,
        started="2026-11-27T01:00:00Z",
        finished="2026-11-27T01:00:09Z",
        verdict=Verdict.FAIL,
        results=RESULTS,
        **extra,
    )


def test_the_summary_keeps_what_the_report_shows_and_not_the_raw_numbers() -> None:
    data = summary()
    assert data["suite"] == "verify" and data["verdict"] == "fail"
    assert data["results"][1] == {
        "name": "rbac viewer POST /users",
        "verdict": "fail",
        "measured": "status 201",
        "threshold": "status 403",
        "detail": "allowed",
    }
    assert "data" not in data["results"][0]
    json.dumps(data)  # stored as JSON


def test_checks_attach_to_the_current_release_only() -> None:
    history = EnvironmentStore(MemoryStore(), "prod")  # type: ignore[arg-type]
    assert history.attach_checks(summary()) is None  # no release: nothing written
    assert history.releases() == []
    history.save_release(record("0001"))
    history.save_release(record("0002"))
    history.save_release(record("0003", outcome="in-progress"))  # a deploy running now
    saved = history.attach_checks(summary())
    assert saved is not None and saved.id == "0002"
    by_id = {r.id: r for r in history.releases()}
    assert by_id["0002"].checks == [summary()]
    assert by_id["0001"].checks == [] and by_id["0003"].checks == []
    # A named release (monitor after its rollback: the release it watched).
    assert history.attach_checks(summary("monitor"), release_id="0001") is not None
    assert [c["suite"] for c in history.releases()[0].checks] == ["monitor"]
    assert history.attach_checks(summary(), release_id="0099") is None


def test_a_record_keeps_the_newest_summaries() -> None:
    history = EnvironmentStore(MemoryStore(), "prod")  # type: ignore[arg-type]
    history.save_release(record("0001"))
    for i in range(CHECKS_KEPT + 3):
        history.attach_checks(summary(samples=i))
    kept = history.releases()[0].checks
    assert len(kept) == CHECKS_KEPT
    assert kept[0]["samples"] == 3 and kept[-1]["samples"] == CHECKS_KEPT + 2


class InterleavingStore(MemoryStore):
    """Holds the first check run right after it read record 0001 until the second run has
    reached that record too (read it, or tried its lock): the interleaving in which, without the
    record's lock, both runs read the same record and the second write drops the first's
    results. Events, not a clock, order the two runs."""

    RECORD = "prod/releases/0001.json"
    LOCK = "prod/releases/0001.checks-lock"

    def __init__(self) -> None:
        super().__init__()
        self.guard = threading.Lock()
        self.armed = False  # set once the record exists: only the check runs are interleaved
        self.first_reader: int | None = None
        self.second_arrived = threading.Event()
        self.first_was_held = False

    def _arrive(self) -> None:
        """A run other than the first reader reached the record."""
        if self.first_reader is not None and threading.get_ident() != self.first_reader:
            self.second_arrived.set()

    def read(self, path: str) -> bytes | None:
        data = super().read(path)
        if self.armed and path == self.RECORD:
            with self.guard:
                first = self.first_reader is None
                if first:
                    self.first_reader = threading.get_ident()
                else:
                    self._arrive()
            if first:  # a deadline, so a broken test fails instead of hanging
                self.first_was_held = self.second_arrived.wait(timeout=20)
        return data

    def create_exclusive(self, path: str, data: bytes) -> bool:
        with self.guard:  # atomic, as the real store's rename without overwrite is
            if self.armed and path == self.LOCK:
                self._arrive()
            return super().create_exclusive(path, data)


def test_two_check_runs_finishing_at_once_keep_both_results() -> None:
    store = InterleavingStore()
    EnvironmentStore(store, "prod").save_release(record("0001"))  # type: ignore[arg-type]
    store.armed = True
    errors: list[BaseException] = []

    def attach(suite: str) -> None:
        try:
            EnvironmentStore(store, "prod").attach_checks(summary(suite), release_id="0001")  # type: ignore[arg-type]
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    runs = [threading.Thread(target=attach, args=(s,)) for s in ("verify", "monitor")]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=60)
    assert errors == []
    # The race was really run: the first reader waited until the other run reached the record.
    assert store.first_was_held
    kept = EnvironmentStore(store, "prod").releases()[0].checks  # type: ignore[arg-type]
    assert sorted(c["suite"] for c in kept) == ["monitor", "verify"]
    assert not any(p.endswith(".checks-lock") for p in store.files)  # released


def test_an_abandoned_checks_lock_is_taken_over_and_a_live_one_waited_for() -> None:
    store = MemoryStore()
    history = EnvironmentStore(store, "prod")  # type: ignore[arg-type]
    history.save_release(record("0001"))
    lock = "prod/releases/0001.checks-lock"
    store.files[lock] = json.dumps({"since": time.time() - 3600}).encode()  # killed long ago
    assert history.attach_checks(summary(), release_id="0001") is not None
    assert lock not in store.files
    store.files[lock] = json.dumps({"since": time.time()}).encode()  # held right now
    with pytest.raises(DeadlineExceeded, match="another check run has been adding its results"):
        history.attach_checks(summary("monitor"), release_id="0001", wait_s=0.5)
    assert [c["suite"] for c in history.releases()[0].checks] == ["verify"]  # untouched
    assert store.files[lock]  # someone else's lock is left alone


def test_records_written_before_checks_and_reason_still_load() -> None:
    store = MemoryStore()
    old = dataclasses.asdict(record("0001"))
    del old["checks"], old["reason"]
    store.files["prod/releases/0001.json"] = json.dumps(old).encode()
    loaded = EnvironmentStore(store, "prod").releases()[0]  # type: ignore[arg-type]
    assert loaded.checks == [] and loaded.reason is None


@contextlib.contextmanager
def opened(histories: dict[str, EnvironmentStore], ctx: Any, environment: str) -> Iterator[Any]:
    if environment not in histories:
        raise EnvironmentUnreachable(f"cannot reach {environment}", untouched="nothing")
    yield SimpleNamespace(history=histories[environment])


def test_save_says_where_it_saved_or_why_not(monkeypatch: pytest.MonkeyPatch) -> None:
    history = EnvironmentStore(MemoryStore(), "prod")  # type: ignore[arg-type]
    monkeypatch.setattr(
        suite_record, "open_environment", lambda ctx, env, **_: opened({"prod": history}, ctx, env)
    )
    ctx: Any = None
    note = suite_record.save(ctx, "prod", summary())
    assert note == "not saved in a release record: prod has no current release record"
    history.save_release(record("0001"))
    assert suite_record.save(ctx, "prod", summary()) == "saved in release record 0001 of prod"
    assert history.releases()[0].checks == [summary()]
    unreachable = suite_record.save(ctx, "elsewhere", summary())
    assert unreachable.startswith("not saved in a release record: cannot reach elsewhere")


def stored(result: dict[str, Any], suite: str) -> dict[str, Any]:
    """A --json result of the golden release as its command now saves it in the record."""
    results = [
        CheckResult(r["name"], Verdict(r["verdict"]), r["measured"], r["threshold"], r["detail"])
        for r in result["results"]
    ]
    extra = {k: result[k] for k in ("samples", "breaches", "rolled_back") if k in result}
    return suite_record.summary(
        suite=suite,
        environment=result["environment"],
        started=result["started"],
        finished=result["finished"],
        verdict=Verdict(result["verdict"]),
        results=results,
        **extra,
    )


def test_the_report_reads_the_records_checks_as_it_reads_the_json_results(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = load_config(ROOT / "deploy.toml")
    recorded = copy.deepcopy(RECORDED)
    results = {name: data["result"] for name, data in recorded["results"].items()}
    deploy = next(r for r in recorded["records"] if r["id"] == "0008")
    deploy["checks"] = [
        stored(results["verify-production.json"], "verify"),
        stored(results["monitor-production.json"], "monitor"),
    ]
    staging = recorded["staging_record"]
    staging["checks"] = [
        stored(results["smoke-staging.json"], "smoke"),
        stored(results["validate-staging.json"], "validate"),
    ]
    for name, data in recorded["results"].items():
        (tmp_path / name).write_text(json.dumps(data))
    from_files = report.load_evidence(tmp_path.glob("*.json"))
    from_records = report.stored_evidence(ReleaseRecord(**staging), ReleaseRecord(**deploy))
    assert set(from_records.suites) == set(from_files.suites)

    def build(evidence: report.Evidence) -> report.ReleaseDocument:
        return report.build_document(
            config,
            environment="production",
            record=ReleaseRecord(**deploy),
            records=[ReleaseRecord(**r) for r in recorded["records"]],
            manifest=BackupManifest(**recorded["manifest"]),
            verification=Verification(**recorded["verification"]),
            evidence=evidence,
            staging_record=ReleaseRecord(**staging),
        )

    files_doc, records_doc = build(from_files), build(from_records)
    assert records_doc.metrics == files_doc.metrics
    assert [m.status for m in records_doc.metrics] == ["met"] * 8
    # Every step the same but release verify, whose report no record keeps.
    differ = [a.name for a, b in zip(files_doc.steps, records_doc.steps, strict=True) if a != b]
    assert differ == ["verify-release"]

    # gather: without --results the records' checks; with --results only the files.
    histories = {}
    for env, recs in (("production", recorded["records"]), ("staging", [staging])):
        histories[env] = EnvironmentStore(MemoryStore(), env)  # type: ignore[arg-type]
        for r in recs:
            histories[env].save_release(ReleaseRecord(**r))
    monkeypatch.setattr(
        session_mod, "open_environment", lambda ctx, env, **_: opened(histories, ctx, env)
    )
    ctx = StepContext(config)
    gathered = report.gather(ctx, environment="production", release_id="0008")
    assert gathered.metrics == files_doc.metrics
    empty = tmp_path / "empty"
    empty.mkdir()
    without = report.gather(ctx, environment="production", release_id="0008", results=[empty])
    assert {m.status for m in without.metrics} == {"not measured"}


def test_rollback_run_records_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def roll_back_in(session: Any, **kw: Any) -> str:
        seen.append(kw["reason"])
        return "record"

    history = EnvironmentStore(MemoryStore(), "prod")  # type: ignore[arg-type]
    monkeypatch.setattr(rollback_step, "roll_back_in", roll_back_in)
    monkeypatch.setattr(
        rollback_step, "open_environment", lambda ctx, env, **_: opened({"prod": history}, ctx, env)
    )
    monkeypatch.setattr(rollback_step.watch_keep, "open_switch_session", lambda target: None)
    ctx: Any = SimpleNamespace(
        config=SimpleNamespace(
            deploy=SimpleNamespace(lock_ttl_s=60),
            environment=lambda name: SimpleNamespace(is_swarm=False),
        ),
        target=lambda env: None,
    )
    rollback_step.run(ctx, environment="prod")
    rollback_step.run(ctx, environment="prod", reason="verification failed")
    assert seen == ["manual", "verification failed"]


def test_the_monitor_rolls_back_with_the_rollback_step_passing_the_breach_as_the_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(rollback_step, "run", lambda ctx, **kw: calls.append(kw) or "back")
    # The environment's records in memory: the unit tier never opens a store on an engine.
    history = EnvironmentStore(MemoryStore(), "local")  # type: ignore[arg-type]
    history.save_release(dataclasses.replace(record("0001"), environment="local"))
    monkeypatch.setattr(
        monitor, "open_environment", lambda ctx, env, **_: opened({"local": history}, ctx, env)
    )

    state = FakeState(users={"root": ("admin-password-123", ["admin"])}, db_down=True)
    with fake_service(state) as url:
        config = parse_config(CONFIG.replace("BASE_URL", url), tmp_path / "deploy.toml")
        probes = tuple(
            dataclasses.replace(p, suites=("monitor",)) for p in config.checks.probes[:1]
        )
        settings = dataclasses.replace(config.checks.monitor, container_stats=False)
        config = dataclasses.replace(
            config, checks=dataclasses.replace(config.checks, probes=probes, monitor=settings)
        )
        now = [0.0]
        watched = monitor.run(
            StepContext(config),
            environment="local",
            duration_s=10,
            interval_s=1,
            environ=ENVIRON,
            clock=lambda: now[0],
            sleep=lambda s: now.__setitem__(0, now[0] + s),
            rollback_on_breach=True,
        )
    assert watched.rolled_back and watched.rollback_result == "back"
    assert calls == [{"environment": "local", "confirm": None, "reason": calls[0]["reason"]}]
    assert calls[0]["reason"].startswith("monitor breach: health: failed 3 samples in a row")


def test_the_incident_report_reads_the_failed_releases_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    history = EnvironmentStore(MemoryStore(), "production")  # type: ignore[arg-type]
    history.save_release(record("0001"))
    history.save_release(record("0002", previous="0001"))
    history.attach_checks(summary(environment="production"))  # verify of 0002, failed
    history.save_release(
        record("0003", kind="rollback", previous="0002", reason="monitor breach: health")
    )
    monkeypatch.setattr(
        incident,
        "open_environment",
        lambda ctx, env, **_: opened({"production": history}, ctx, env),
    )
    monkeypatch.setattr(incident, "_fetch_logs", lambda session, config, failed: ([], "none"))
    ctx = StepContext(load_config(ROOT / "deploy.toml"))
    found = incident.gather(ctx, environment="production")
    assert [(c.suite, c.name, c.threshold) for c in found.failed_checks] == [
        ("verify", "rbac viewer POST /users", "status 403")
    ]
