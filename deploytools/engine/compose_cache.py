"""Which Compose is installed, remembered across processes.

Asking Compose for its version costs a child process (about a second for the Python
`docker-compose` v1), and every deploytools process that runs Compose needs the answer. The
answer depends only on the programs on PATH and the Compose plugin files, so it is kept in a
small file under the user's cache directory, keyed by what decides it: the engine, the
resolved path, size and modification time of `docker` and `docker-compose`, and of every
plugin file the docker CLI would look at (present or not) and its config.json. Any change
of those gives another key, hence a new probe. A cache file that is unreadable, malformed or
names another key is ignored; one that cannot be written is not an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deploytools.commands import compose as compose_cmd

FORMAT = 1
#: The docker CLI's system plugin directories (cli/cli-plugins/manager, Linux).
SYSTEM_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)
#: The only answers a cache file may give: a forged file cannot make us run another program.
KNOWN_PREFIXES = (compose_cmd.COMPOSE_V2, compose_cmd.COMPOSE_V1)
MAX_VERSION_LEN = 64


def cache_dir(environ: Mapping[str, str]) -> Path | None:
    """`$XDG_CACHE_HOME/deploytools` (when absolute, as the spec says), else
    `~/.cache/deploytools`; None without a home."""
    xdg = environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "deploytools"
    home = environ.get("HOME", "")
    if home and Path(home).is_absolute():
        return Path(home) / ".cache" / "deploytools"
    return None


def _stat(path: str | Path) -> list[Any] | None:
    """[resolved path, size, mtime in ns] of a file, or None when absent."""
    try:
        real = Path(path).resolve()
        info = real.stat()
    except (OSError, RuntimeError):
        return None
    return [str(real), info.st_size, info.st_mtime_ns]


def _docker_config(environ: Mapping[str, str]) -> Path | None:
    configured = environ.get("DOCKER_CONFIG", "")
    if configured:
        return Path(configured)
    home = environ.get("HOME", "")
    return Path(home) / ".docker" if home else None


def _plugin_dirs(environ: Mapping[str, str]) -> list[str]:
    config = _docker_config(environ)
    dirs: list[str] = []
    if config is not None:
        dirs.append(str(config / "cli-plugins"))
        try:
            extra = json.loads((config / "config.json").read_text(encoding="utf-8"))
            named = extra.get("cliPluginsExtraDirs", []) if isinstance(extra, dict) else []
            dirs.extend(str(d) for d in named if isinstance(d, str))
        except (OSError, ValueError):
            pass
    return [*dirs, *SYSTEM_PLUGIN_DIRS]


def fingerprint(docker_host: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """What decides which Compose a probe finds, for `docker_host` and this environment."""
    path = environ.get("PATH")
    programs = {}
    for name in ("docker", "docker-compose"):
        found = shutil.which(name, path=path)
        programs[name] = _stat(found) if found else None
    config = _docker_config(environ)
    return {
        "format": FORMAT,
        "docker_host": docker_host,
        "programs": programs,
        "plugins": {d: _stat(Path(d) / "docker-compose") for d in _plugin_dirs(environ)},
        "config": _stat(config / "config.json") if config is not None else None,
    }


def _file_for(directory: Path, key: Mapping[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return directory / f"compose-{digest}.json"


def load(directory: Path | None, key: Mapping[str, Any]) -> compose_cmd.ComposeCli | None:
    """The remembered answer for `key`, or None (no file, unreadable, malformed, other key)."""
    if directory is None:
        return None
    try:
        data = json.loads(_file_for(directory, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != json.loads(json.dumps(key)):
        return None
    prefix, version = data.get("prefix"), data.get("version")
    if not isinstance(prefix, list) or tuple(prefix) not in KNOWN_PREFIXES:
        return None
    if not isinstance(version, str) or not version.strip() or len(version) > MAX_VERSION_LEN:
        return None
    if not version.isprintable():
        return None
    return compose_cmd.ComposeCli(prefix=tuple(prefix), version=version)


def store(directory: Path | None, key: Mapping[str, Any], cli: compose_cmd.ComposeCli) -> None:
    """Remembers `cli` for `key`: written to a temporary file, then renamed over the old one,
    so a reader sees a whole file or none. Failing to write only costs the next probe."""
    if directory is None:
        return
    body = json.dumps({"key": key, "prefix": list(cli.prefix), "version": cli.version})
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temporary = tempfile.mkstemp(prefix=".compose-", dir=directory)
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(body)
        Path(temporary).replace(_file_for(directory, key))
    except OSError:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
