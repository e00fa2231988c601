"""The log scan: lines since a moment (the deploy) that match an error pattern."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from deploytools.engine.client import Container
from deploytools.engine.errors import EngineError
from deploytools.errors import EnvironmentUnreachable


@dataclass(frozen=True)
class LogScanResult:
    container: str
    since: str
    lines_read: int
    matches: tuple[str, ...]


def matching_lines(lines: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The lines that contain any of the patterns (plain substrings, case as written)."""
    return [line for line in lines if any(p in line for p in patterns)]


def scan(container: Container, *, since: datetime, patterns: Sequence[str]) -> LogScanResult:
    """Read `container`'s stdout and stderr since `since` and keep the lines that match."""
    try:
        raw = container.logs(stdout=True, stderr=True, since=since, timestamps=False)
    except EngineError as exc:
        raise EnvironmentUnreachable(
            f"cannot read the logs of container {container.name}: {exc}",
            untouched="nothing was changed",
            facts={"container": container.name},
        ) from None
    lines = raw.decode("utf-8", "replace").splitlines()
    found = matching_lines(lines, patterns)
    return LogScanResult(container.name, since.isoformat(), len(lines), tuple(found))
