"""Sizes for people: a backup of a few KB reads in KB, not "0.0 MB"."""

from __future__ import annotations

import pytest

from deploytools.cli.backup_cmd import _summary
from deploytools.sizes import human_size
from deploytools.store.records import BackupManifest


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (4_321, "4.3 KB"),
        (999_949, "999.9 KB"),
        (1_500_000, "1.5 MB"),
        (2_000_000_000, "2.0 GB"),
        (5 * 10**15, "5000.0 TB"),
    ],
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


def test_a_small_backup_is_listed_in_kb() -> None:
    manifest = BackupManifest(
        id="b-1", environment="staging", created="2026-12-01T00:00:00Z", database="app",
        release=None, image=None, version=None, revision=None, size=6_144, sha256="0" * 64,
        pg_dump_version="16", row_counts={"users": 3}, file="b-1.dump",
    )  # fmt: skip
    assert "6.1 KB" in _summary(manifest)
    assert "0.0 MB" not in _summary(manifest)
