"""Sizes for people: a few KB of backup is "12.3 KB", not "0.0 MB".

human_size (decimal units) is what the command line prints; size_text (binary units and the
exact byte count) is what the runbook report shows."""

from __future__ import annotations


def human_size(size: int) -> str:
    """Bytes in the largest decimal unit (B, KB, MB, GB, TB) that keeps the number at least 1,
    to one decimal: 12_345 -> "12.3 KB", 1_500_000 -> "1.5 MB", 512 -> "512 B"."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


def size_text(size: int) -> str:
    """Bytes for people, exactly: "1.5 MiB (1572864 bytes)"."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit} ({size} bytes)"
        value /= 1024
    return f"{size} bytes"
