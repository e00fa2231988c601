"""The operations of BackupStore that EnvironmentStore and the pipeline log use, in a dict: for unit
tests of what is stored (the real store, a helper container on the engine, has its own
integration tests)."""

from __future__ import annotations


class MemoryStore:
    description = "memory"

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def ensure_dir(self, *paths: str, with_next: bool = False) -> None:
        """Directories exist implicitly."""

    def exists(self, path: str) -> bool:
        return path in self.files or any(p.startswith(path.rstrip("/") + "/") for p in self.files)

    def read(self, path: str) -> bytes | None:
        return self.files.get(path)

    def write(self, path: str, data: bytes) -> None:
        self.files[path] = data

    def create_exclusive(self, path: str, data: bytes) -> bool:
        if path in self.files:
            return False
        self.files[path] = data
        return True

    def create_exclusive_then_read_all(
        self, path: str, data: bytes, directory: str, suffix: str = ""
    ) -> dict[str, bytes] | None:
        if not self.create_exclusive(path, data):
            return None
        return self.read_all(directory, suffix)

    def remove(self, *paths: str) -> None:
        for path in paths:
            self.files.pop(path, None)

    def remove_if_contains(self, path: str, text: str) -> bool:
        if text.encode() not in self.files.get(path, b""):
            return False
        del self.files[path]
        return True

    def list_files(self, directory: str, suffix: str = "") -> list[str]:
        prefix = directory.rstrip("/") + "/"
        return sorted(
            p[len(prefix) :]
            for p in self.files
            if p.startswith(prefix) and "/" not in p[len(prefix) :] and p.endswith(suffix)
        )

    def read_all(self, directory: str, suffix: str = "") -> dict[str, bytes]:
        prefix = directory.rstrip("/") + "/"
        return {name: self.files[prefix + name] for name in self.list_files(directory, suffix)}
