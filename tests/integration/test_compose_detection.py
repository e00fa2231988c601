"""Compose detection across processes, with the machine's real Compose: the first deploytools
process probes it and writes the cache file, a second one reads the file and runs no probe."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

DETECT = (
    "from deploytools.engine.compose import detect_compose; "
    "cli = detect_compose(); print(' '.join(cli.prefix), cli.version)"
)


def _logging_wrapper(bin_dir: Path, name: str, log: Path) -> None:
    """`name` on PATH ahead of the real one: notes each call, then runs the real program."""
    real = shutil.which(name)
    if real is None:
        return
    wrapper = bin_dir / name
    wrapper.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)


def test_a_second_process_reads_the_detection_and_runs_no_probe(tmp_path: Path) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "probes.log"
    bin_dir.mkdir()
    for name in ("docker", "docker-compose"):
        _logging_wrapper(bin_dir, name, log)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }

    def detect() -> str:
        done = subprocess.run(
            [sys.executable, "-c", DETECT],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout.strip()

    first = detect()
    probes = log.read_text().splitlines()
    assert probes, "the first process probed no Compose"
    assert all(line.endswith("version --short") for line in probes)
    assert list((tmp_path / "cache" / "deploytools").glob("compose-*.json"))

    second = detect()
    assert second == first
    assert log.read_text().splitlines() == probes  # no new call of docker or docker-compose
