"""CPU and memory computed as `docker stats` does."""

from __future__ import annotations

import pytest

from deploytools.checks import containers


def stats(total: int, system: int, *, pre_total: int, pre_system: int) -> dict[str, object]:
    return {
        "cpu_stats": {
            "cpu_usage": {"total_usage": total},
            "system_cpu_usage": system,
            "online_cpus": 2,
        },
        "precpu_stats": {"cpu_usage": {"total_usage": pre_total}, "system_cpu_usage": pre_system},
        "memory_stats": {"usage": 300 * 2**20, "stats": {"inactive_file": 100 * 2**20}},
    }


def test_cpu_percent_is_delta_over_system_delta_times_cpus() -> None:
    s = stats(1_100_000_000, 20_000_000_000, pre_total=1_000_000_000, pre_system=18_000_000_000)
    # 0.1 s of CPU in 2 s of all CPUs' time, 2 CPUs: 10 %.
    assert containers.cpu_percent(s) == pytest.approx(10.0)


def test_cpu_percent_is_zero_without_a_system_delta() -> None:
    assert containers.cpu_percent(stats(5, 10, pre_total=5, pre_system=10)) == 0.0


def test_memory_subtracts_inactive_file_cgroup_v2_and_v1() -> None:
    assert containers.memory_bytes(stats(0, 0, pre_total=0, pre_system=0)) == 200 * 2**20
    v1 = {"memory_stats": {"usage": 500, "stats": {"total_inactive_file": 120, "cache": 300}}}
    assert containers.memory_bytes(v1) == 380


def test_usage_between_two_readings() -> None:
    before = stats(1_000_000_000, 18_000_000_000, pre_total=0, pre_system=0)
    after = stats(1_400_000_000, 22_000_000_000, pre_total=0, pre_system=0)
    use = containers.usage_between("app", before, after)
    assert use.cpu_percent == pytest.approx(20.0)
    assert use.memory_mb == pytest.approx(200.0)
