"""Docker Compose, run as a child process (v2 `docker compose` or v1 `docker-compose`).

Argv comes from `deploytools.commands.compose`; this module finds which Compose is installed
and builds the environment a Compose child gets: the allow-list and the engine's connection
(`process.child_env(engine=True)`), the stack's variables, and what the caller names (secrets).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from deploytools.commands import compose as compose_cmd
from deploytools.engine import compose_cache, process
from deploytools.errors import EnvironmentUnreachable

VERSION_PROBE_TIMEOUT_S = 20.0


#: `$NAME` or `${NAME...}` in a Compose file; `$$` is Compose's escape for a literal `$`.
_REFERENCE = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")


def referenced_variables(files: Sequence[str | Path]) -> frozenset[str]:
    """The names of the variables the Compose files interpolate (`${POSTGRES_IMAGE:-...}`):
    the stack's own variables, which the user may set in the environment instead of in
    deploy.toml. Files that cannot be read name none (Compose will say why)."""
    names: set[str] = set()
    for file in files:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        text = text.replace("$$", "")
        for braced, bare in _REFERENCE.findall(text):
            names.add(braced or bare)
    return frozenset(names)


def compose_env(
    docker_host: str = "",
    variables: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
    *,
    passed: Iterable[str] = (),
    parent: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """What a Compose child runs with, and nothing else.

    :param docker_host: the engine (DOCKER_HOST for the child) when not the default one.
    :param variables: the stack's variables (deploy.toml's `variables`).
    :param extra: what the step sets (APP_IMAGE, ...); wins over everything else.
    :param passed: names taken from `parent` when set there: the environment's named secrets
        and the variables the Compose files interpolate.
    :param parent: the environment to take from; `os.environ` when None.
    """
    source = os.environ if parent is None else parent
    env = process.child_env(engine=True, parent=source)
    env.update({name: source[name] for name in passed if name in source})
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    env.update(variables or {})
    env.update(extra or {})
    return env


@functools.cache
def detect_compose(docker_host: str = "") -> compose_cmd.ComposeCli:
    """Compose v2 (`docker compose`) when the plugin exists, else v1 (`docker-compose`);
    remembered in this process and, while the programs are unchanged, in the user's cache
    directory (`compose_cache`)."""
    return find_compose(docker_host)


def find_compose(
    docker_host: str = "",
    *,
    runner: process.Runner = process.default_runner,
    environ: Mapping[str, str] | None = None,
) -> compose_cmd.ComposeCli:
    """`detect_compose` without the in-process memory: the cache file's answer for this key,
    else a probe of each candidate (whose answer is then written to the cache file).

    :param runner: runs the version probes (swapped by tests).
    :param environ: the environment to read PATH, HOME and the cache directory from;
        `os.environ` when None.
    """
    source = os.environ if environ is None else environ
    key = compose_cache.fingerprint(docker_host, source)
    directory = compose_cache.cache_dir(source)
    remembered = compose_cache.load(directory, key)
    if remembered is not None:
        return remembered
    cli = _probe(docker_host, runner, source)
    compose_cache.store(directory, key, cli)
    return cli


def _probe(
    docker_host: str, runner: process.Runner, source: Mapping[str, str]
) -> compose_cmd.ComposeCli:
    env = compose_env(docker_host, parent=source)
    for prefix in (compose_cmd.COMPOSE_V2, compose_cmd.COMPOSE_V1):
        if shutil.which(prefix[0], path=source.get("PATH")) is None:
            continue
        try:
            done = runner(
                compose_cmd.version_probe(prefix), env=env, timeout=VERSION_PROBE_TIMEOUT_S
            )
        except (OSError, process.ProcessTimedOut, process.ProgramNotFound):
            continue
        if done.returncode == 0 and done.stdout.strip():
            return compose_cmd.ComposeCli(prefix=prefix, version=done.stdout.strip())
    raise EnvironmentUnreachable(
        "Docker Compose is not installed: neither `docker compose` nor `docker-compose` works",
        untouched="nothing was done",
        hint="install the compose plugin or Debian's docker-compose package",
    )
