"""verify reads the app containers' CPU and memory over its window, as monitor does, so the
runbook report's CPU and memory rows are filled for every release; smoke does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploytools.checks.results import Verdict
from deploytools.config import parse_config
from deploytools.context import StepContext
from deploytools.steps import check_suites
from deploytools.steps.report.document import metric_sources
from tests.fakes.rbac_service import CONFIG, ENVIRON, FakeState, fake_service

GIB = 1024**3


class FakeContainer:
    """The engine's stats over one second: 0.5 s of CPU time in 1 s of the host's two CPUs
    (50 %); memory 100 MB at the first reading, 300 MB at the later ones."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.readings = 0

    def stats(self, one_shot: bool = False) -> dict[str, Any]:
        assert not one_shot  # CPU over the engine's own one-second window
        self.readings += 1
        mb = 100 if self.readings == 1 else 300
        return {
            "cpu_stats": {
                "cpu_usage": {"total_usage": 1_500_000_000},
                "system_cpu_usage": 4_000_000_000,
                "online_cpus": 2,
            },
            "precpu_stats": {
                "cpu_usage": {"total_usage": 1_000_000_000},
                "system_cpu_usage": 2_000_000_000,
            },
            "memory_stats": {"usage": mb * 1024 * 1024, "stats": {"inactive_file": 0}},
        }


class FakeTarget:
    def __init__(self) -> None:
        self.app = FakeContainer("svc-app-1")

    def containers(self, service: str, include_stopped: bool = True) -> list[FakeContainer]:
        assert service == "app" and include_stopped is False
        return [self.app]


def run(tmp_path: Path, suite: str) -> check_suites.SuiteReport:
    state = FakeState(users={"root": ("admin-password-123", ["admin"])})
    with fake_service(state) as url:
        text = CONFIG.replace("BASE_URL", url).replace(
            "[thresholds]", "[thresholds]\ncpu_percent = 80.0\nmemory_mb = 256.0"
        )
        config = parse_config(text, tmp_path / "deploy.toml")
        ctx = StepContext(config)
        ctx._targets["local"] = FakeTarget()  # type: ignore[assignment]
        return check_suites.run(ctx, environment="local", suite=suite, environ=ENVIRON)


def test_verify_judges_cpu_and_memory_over_its_window(tmp_path: Path) -> None:
    report = run(tmp_path, "verify")
    by_name = {r.name: r for r in report.results}
    cpu, memory = by_name["cpu svc-app-1"], by_name["memory svc-app-1"]
    assert (cpu.verdict, cpu.measured, cpu.threshold) == (Verdict.PASS, "50.0%", "< 80%")
    # Memory: the larger of the readings at the start and at the end (after the load test).
    assert (memory.verdict, memory.measured) == (Verdict.FAIL, "300 MB")
    # The report's CPU and memory rows are filled from exactly these names.
    sources = metric_sources(parse_config(CONFIG.replace("BASE_URL", "http://h"), tmp_path / "d"))
    assert any(cpu.name.startswith(s) for s in sources["cpu_percent"])
    assert any(memory.name.startswith(s) for s in sources["memory_mb"])


def test_smoke_reads_no_stats(tmp_path: Path) -> None:
    report = run(tmp_path, "smoke")
    assert not [r for r in report.results if r.name.startswith(("cpu ", "memory "))]
