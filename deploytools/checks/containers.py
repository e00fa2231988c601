"""Container CPU and memory, computed from the engine's stats exactly as `docker stats` does.

CPU % = (container CPU time delta / host CPU time delta) * online CPUs * 100, between the two
readings the engine returns in one stats answer (`cpu_stats` and `precpu_stats`). Memory is the
usage minus the page cache the kernel can drop: `inactive_file` on cgroup v2, `total_inactive_file`
on cgroup v1 (docker CLI >= 20.10; older ones subtracted `cache`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deploytools.checks.results import CheckResult, Verdict
from deploytools.engine.client import Container
from deploytools.engine.errors import EngineError
from deploytools.errors import EnvironmentUnreachable


@dataclass(frozen=True)
class ContainerUsage:
    container: str
    cpu_percent: float
    memory_bytes: int

    @property
    def memory_mb(self) -> float:
        return self.memory_bytes / (1024 * 1024)


def cpu_percent(stats: Mapping[str, Any]) -> float:
    cpu = stats.get("cpu_stats") or {}
    pre = stats.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (
        pre.get("cpu_usage") or {}
    ).get("total_usage", 0)
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or [])
    if system_delta <= 0 or cpu_delta < 0 or not online:
        return 0.0
    return float(cpu_delta) / float(system_delta) * float(online) * 100.0


def memory_bytes(stats: Mapping[str, Any]) -> int:
    memory = stats.get("memory_stats") or {}
    usage = int(memory.get("usage", 0))
    detail = memory.get("stats") or {}
    if "total_inactive_file" in detail:  # cgroup v1
        cache = detail["total_inactive_file"]
    elif "inactive_file" in detail:  # cgroup v2
        cache = detail["inactive_file"]
    else:
        cache = 0
    return max(0, usage - int(cache))


def raw_stats(container: Container) -> dict[str, Any]:
    """One reading without the engine's own one-second wait (`one_shot`): CPU is then computed
    between two of our readings, over the whole interval between them."""
    try:
        stats = container.stats(one_shot=True)
    except EngineError as exc:
        raise EnvironmentUnreachable(
            f"cannot read the stats of container {container.name}: {exc}",
            untouched="nothing was changed",
            facts={"container": container.name},
        ) from None
    return stats


def usage_between(name: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> ContainerUsage:
    """CPU over the time between two readings (docker stats' formula), memory at the later."""
    pair = {"cpu_stats": after.get("cpu_stats"), "precpu_stats": before.get("cpu_stats")}
    return ContainerUsage(name, cpu_percent(pair), memory_bytes(after))


def usage(container: Container) -> ContainerUsage:
    """One reading of a running container (the engine takes about a second to answer)."""
    try:
        stats = container.stats()
    except EngineError as exc:
        raise EnvironmentUnreachable(
            f"cannot read the stats of container {container.name}: {exc}",
            untouched="nothing was changed",
            facts={"container": container.name},
        ) from None
    return ContainerUsage(container.name, cpu_percent(stats), memory_bytes(stats))


def usage_results(
    before: Mapping[str, Mapping[str, Any]],
    after: Mapping[str, Mapping[str, Any]],
    *,
    cpu_limit: float,
    memory_limit_mb: float,
) -> list[CheckResult]:
    """ "cpu NAME" and "memory NAME" of each container read at both ends of a window, against
    [thresholds] cpu_percent and memory_mb (a container new at the end has no window yet)."""
    return judge_usage(
        [usage_between(n, before[n], now) for n, now in after.items() if n in before],
        cpu_limit=cpu_limit,
        memory_limit_mb=memory_limit_mb,
    )


def judge_usage(
    usages: list[ContainerUsage], *, cpu_limit: float, memory_limit_mb: float
) -> list[CheckResult]:
    """ "cpu NAME" and "memory NAME" of each usage, against cpu_percent and memory_mb."""
    out = []
    for use in usages:
        name = use.container
        out.append(
            CheckResult(
                f"cpu {name}",
                Verdict.PASS if use.cpu_percent < cpu_limit else Verdict.FAIL,
                f"{use.cpu_percent:.1f}%",
                f"< {cpu_limit:g}%",
            )
        )
        out.append(
            CheckResult(
                f"memory {name}",
                Verdict.PASS if use.memory_mb < memory_limit_mb else Verdict.FAIL,
                f"{use.memory_mb:.0f} MB",
                f"< {memory_limit_mb:g} MB",
            )
        )
    return out
