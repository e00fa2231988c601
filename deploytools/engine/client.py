"""The Docker engine, typed: containers, images, volumes, one-off containers, builds, pushes.

`Engine` wraps the docker SDK's client (which ships no types) so that mypy --strict sees every
call deploytools makes to an engine; `Container`, `Image` and `Volume` wrap the SDK's objects the
same way. Every method turns the SDK's and its transport's exceptions into `engine.errors`.
The SDK itself is imported by `connection.connect`, when a client is actually made.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deploytools.engine import exec as exec_
from deploytools.engine.errors import ImageNotFound, NotFound, translated

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
VOLUME_LABEL = "com.docker.compose.volume"


class Image:
    """An image on the engine."""

    def __init__(self, sdk: Any) -> None:
        self._sdk = sdk

    @property
    def id(self) -> str:
        return str(self._sdk.id)

    @property
    def labels(self) -> dict[str, str]:
        return dict(self._sdk.labels or {})

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._sdk.attrs or {})

    @property
    def repo_digests(self) -> tuple[str, ...]:
        return tuple(self.attrs.get("RepoDigests") or ())

    @property
    def env(self) -> list[str]:
        """The image's own environment (`Config.Env`), as NAME=value lines."""
        return list((self.attrs.get("Config") or {}).get("Env") or [])

    def tag(self, repository: str, tag: str) -> None:
        with translated():
            self._sdk.tag(repository, tag)


class Container:
    """A container on the engine (a snapshot of its state; `reload` refreshes it)."""

    def __init__(self, sdk: Any) -> None:
        self._sdk = sdk

    # -- what it is ----------------------------------------------------------------------

    @property
    def id(self) -> str:
        return str(self._sdk.id)

    @property
    def name(self) -> str:
        return str(self._sdk.name)

    @property
    def status(self) -> str:
        return str(self._sdk.status)

    @property
    def labels(self) -> dict[str, str]:
        return dict(self._sdk.labels or {})

    @property
    def attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = self._sdk.attrs
        return attrs

    @property
    def image_id(self) -> str:
        return str(self.attrs.get("Image", ""))

    @property
    def env(self) -> dict[str, str]:
        """The container's environment (`Config.Env`) as a mapping."""
        env: dict[str, str] = {}
        for item in (self.attrs.get("Config") or {}).get("Env") or []:
            key, _, value = str(item).partition("=")
            env[key] = value
        return env

    def image(self) -> Image | None:
        """The container's image, or None when the engine no longer has it."""
        try:
            with translated():
                return Image(self._sdk.image)
        except ImageNotFound:
            return None

    # -- what it does --------------------------------------------------------------------

    def reload(self) -> None:
        with translated():
            self._sdk.reload()

    def logs(
        self,
        *,
        stdout: bool = True,
        stderr: bool = True,
        since: datetime.datetime | None = None,
        tail: int | None = None,
        timestamps: bool = False,
    ) -> bytes:
        options: dict[str, Any] = {"stdout": stdout, "stderr": stderr, "timestamps": timestamps}
        if since is not None:
            options["since"] = since
        if tail is not None:
            options["tail"] = tail
        with translated():
            return bytes(self._sdk.logs(**options))

    def stats(self, *, one_shot: bool = False) -> dict[str, Any]:
        """One stats reading; `one_shot` skips the engine's own one-second wait."""
        with translated():
            if one_shot:
                stats: dict[str, Any] = self._sdk.stats(stream=False, one_shot=True)
            else:
                stats = self._sdk.stats(stream=False)
        return stats

    def start(self) -> None:
        with translated():
            self._sdk.start()

    def stop(self, *, timeout_s: int = 10) -> None:
        with translated():
            self._sdk.stop(timeout=timeout_s)

    def remove(self, *, force: bool = False, volumes: bool = False) -> None:
        with translated():
            self._sdk.remove(force=force, v=volumes)

    @property
    def exit_code(self) -> int | None:
        """The exit code of a container that has exited (as of the last `reload`), else None."""
        state = self.attrs.get("State") or {}
        if state.get("Status") not in ("exited", "dead"):
            return None
        return int(state.get("ExitCode", -1))

    def wait(
        self,
        *,
        timeout_s: float,
        poll_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> int | None:
        """Wait until the container exits: its exit code, or None when `timeout_s` passed first
        (the container is left as it is: the caller stops or removes it)."""
        deadline = clock() + timeout_s
        while True:
            self.reload()
            code = self.exit_code
            if code is not None:
                return code
            left = deadline - clock()
            if left <= 0:
                return None
            sleep(min(poll_s, left))

    # -- running a program inside it -----------------------------------------------------

    def healthcheck_argv(self) -> list[str] | None:
        """The program the engine runs as this container's healthcheck (its `Config.Healthcheck`,
        the image's when the container names none), as an exec's argv; None when it has none
        (no healthcheck, or `NONE`). `CMD-SHELL` runs in the container's shell, /bin/sh -c
        unless its `Config.Shell` names another, as the engine does."""
        config = self.attrs.get("Config") or {}
        test = list((config.get("Healthcheck") or {}).get("Test") or [])
        if not test or test[0] == "NONE":
            return None
        if test[0] == "CMD":
            return [str(a) for a in test[1:]] or None
        if test[0] == "CMD-SHELL":
            shell = [str(a) for a in config.get("Shell") or []] or ["/bin/sh", "-c"]
            return [*shell, " ".join(str(a) for a in test[1:])]
        return None

    def healthcheck_timeout_s(self) -> float | None:
        """The healthcheck's own timeout, in seconds (None when it names none: the engine's
        default then applies)."""
        nanoseconds = ((self.attrs.get("Config") or {}).get("Healthcheck") or {}).get("Timeout")
        return nanoseconds / 1e9 if nanoseconds else None

    def probe_health(self, *, timeout_s: float) -> exec_.ExecResult | None:
        """Run the container's healthcheck program once, now, by exec, as the engine runs it
        between its probes (same program, user, environment and working directory): its result,
        or None when the container has no healthcheck. Raises as `exec` does (the program
        silent for `timeout_s`, the container gone)."""
        argv = self.healthcheck_argv()
        if argv is None:
            return None
        return self.exec(argv, timeout_s=timeout_s)

    def exec(
        self,
        argv: Sequence[str],
        *,
        stdin: Iterable[bytes] | None = None,
        user: str = "",
        environment: Mapping[str, str] | None = None,
        timeout_s: float = exec_.DEFAULT_TIMEOUT_S,
    ) -> exec_.ExecResult:
        """Run argv in the container to completion (see `engine.exec.capture`)."""
        return exec_.capture(
            self._sdk.client.api,
            self.id,
            argv,
            stdin=stdin,
            user=user,
            environment=environment,
            timeout_s=timeout_s,
        )

    def exec_stream(
        self, argv: Sequence[str], *, user: str = "", timeout_s: float = exec_.DEFAULT_TIMEOUT_S
    ) -> exec_.ExecStream:
        """Run argv in the container, its stdout streamed (see `engine.exec.stream`)."""
        return exec_.stream(self._sdk.client.api, self.id, argv, user=user, timeout_s=timeout_s)

    def exec_attached(self, argv: Sequence[str]) -> exec_.AttachedExec:
        """Run argv in the container with stdin and stdout attached (see AttachedExec)."""
        return exec_.AttachedExec(self._sdk.client.api, self.id, argv)


@dataclass(frozen=True)
class Volume:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Mount:
    """What a one-off container mounts at `target`: a named volume or a host directory
    (`kind` "volume" or "bind"). A bind of a directory that does not exist is refused."""

    target: str
    source: str
    kind: str = "volume"
    read_only: bool = False


@dataclass(frozen=True)
class OneOff:
    """A one-off container: started detached beside the stack, removed by its caller (and by
    the engine when it exits, with `auto_remove`)."""

    image: str
    name: str
    command: Sequence[str] | None = None
    entrypoint: Sequence[str] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    environment: Sequence[str] = ()
    mounts: Sequence[Mount] = ()
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    user: str = ""
    network: str = ""
    network_mode: str = ""
    #: Published ports: container port ("8000/tcp") -> host address ("127.0.0.1", any port).
    publish_on: Mapping[str, str] = field(default_factory=dict)
    auto_remove: bool = False
    #: Ports published on a fixed host port: container port ("80/tcp") -> (host address, "" for
    #: every interface; host port). For a long-running helper (deploytools' own proxy).
    publish_fixed: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    #: The restart policy's name ("unless-stopped"); "" = none, as `docker run`.
    restart: str = ""
    stop_signal: str = ""
    #: The engine's healthcheck: test (argv with "CMD" first), interval_s, timeout_s, retries,
    #: start_period_s.
    healthcheck: Mapping[str, Any] | None = None
    #: The root filesystem read-only (writable places are then `tmpfs` only).
    read_only: bool = False
    #: Limits: memory ("512m", swap included), CPUs (1.0 = one core), processes; 0/"" = none.
    memory: str = ""
    cpus: float = 0.0
    pids: int = 0
    #: Linux capabilities dropped ("ALL") and security options ("no-new-privileges").
    cap_drop: Sequence[str] = ()
    security_opt: Sequence[str] = ()
    #: The json-file log's size cap ("64m"): what the container prints is kept up to it.
    log_max_size: str = ""


def _confinement(spec: OneOff) -> dict[str, Any]:
    """The SDK options of a one-off's read-only root, limits and log cap (none when unset)."""
    options: dict[str, Any] = {}
    if spec.read_only:
        options["read_only"] = True
    if spec.memory:
        # memswap_limit equal to mem_limit: no swap beyond the limit.
        options["mem_limit"] = spec.memory
        options["memswap_limit"] = spec.memory
    if spec.cpus:
        options["nano_cpus"] = int(spec.cpus * 1_000_000_000)
    if spec.pids:
        options["pids_limit"] = spec.pids
    if spec.cap_drop:
        options["cap_drop"] = list(spec.cap_drop)
    if spec.security_opt:
        options["security_opt"] = list(spec.security_opt)
    if spec.log_max_size:
        options["log_config"] = {
            "type": "json-file",
            "config": {"max-size": spec.log_max_size, "max-file": "1"},
        }
    return options


class Engine:
    """One Docker engine, connected (see `connection.connect`)."""

    def __init__(self, sdk: Any, *, host: str = "") -> None:
        self._sdk = sdk
        #: What the engine was reached as ("" for the local socket), for messages.
        self.host = host

    # -- containers ----------------------------------------------------------------------

    def containers(self, *, labels: Sequence[str] = (), all: bool = True) -> list[Container]:
        """The containers carrying every one of `labels` ("key=value"); stopped ones too
        unless `all` is false."""
        with translated():
            found = self._sdk.containers.list(all=all, filters={"label": list(labels)})
        return [Container(c) for c in found]

    def container(self, name_or_id: str) -> Container:
        """A container by name or ID; engine.errors.NotFound when it does not exist."""
        with translated():
            return Container(self._sdk.containers.get(name_or_id))

    def project_containers(
        self, project: str, service: str | None = None, *, include_stopped: bool = True
    ) -> list[Container]:
        """A Compose project's service containers (one-off `run` containers excluded)."""
        labels = [f"{PROJECT_LABEL}={project}"]
        if service:
            labels.append(f"{SERVICE_LABEL}={service}")
        found = self.containers(labels=labels, all=include_stopped)
        return [c for c in found if c.labels.get(ONEOFF_LABEL, "False") != "True"]

    def run(self, spec: OneOff) -> Container:
        """Start a one-off container, detached; engine.errors on refusal (ImageNotFound when
        its image is not on the engine: nothing is pulled)."""
        volumes: dict[str, dict[str, str]] = {}
        mounts: list[Any] = []
        for mount in spec.mounts:
            if mount.kind == "bind":
                # The SDK loads when an engine is used, not when deploytools is imported.
                import docker.types

                mounts.append(
                    docker.types.Mount(
                        mount.target, mount.source, type="bind", read_only=mount.read_only
                    )
                )
            else:
                mode = "ro" if mount.read_only else "rw"
                volumes[mount.source] = {"bind": mount.target, "mode": mode}
        options: dict[str, Any] = {
            "name": spec.name,
            "detach": True,
            "auto_remove": spec.auto_remove,
            "labels": dict(spec.labels),
        }
        if spec.command is not None:
            options["command"] = list(spec.command)
        if spec.entrypoint is not None:
            options["entrypoint"] = list(spec.entrypoint)
        if spec.environment:
            options["environment"] = list(spec.environment)
        if volumes:
            options["volumes"] = volumes
        if mounts:
            options["mounts"] = mounts
        if spec.tmpfs:
            options["tmpfs"] = dict(spec.tmpfs)
        if spec.user:
            options["user"] = spec.user
        if spec.network:
            options["network"] = spec.network
        if spec.network_mode:
            options["network_mode"] = spec.network_mode
        ports: dict[str, Any] = {port: (host, None) for port, host in spec.publish_on.items()}
        ports.update({p: (h, port) if h else port for p, (h, port) in spec.publish_fixed.items()})
        if ports:
            options["ports"] = ports
        if spec.restart:
            options["restart_policy"] = {"Name": spec.restart}
        if spec.stop_signal:
            options["stop_signal"] = spec.stop_signal
        if spec.healthcheck is not None:
            check = spec.healthcheck
            options["healthcheck"] = {
                "test": list(check["test"]),
                "interval": int(check.get("interval_s", 2) * 1e9),
                "timeout": int(check.get("timeout_s", 3) * 1e9),
                "retries": int(check.get("retries", 3)),
                "start_period": int(check.get("start_period_s", 0) * 1e9),
            }
        options.update(_confinement(spec))
        with translated():
            return Container(self._sdk.containers.run(spec.image, **options))

    # -- images --------------------------------------------------------------------------

    def image(self, ref: str) -> Image:
        """The image `ref` names; ImageNotFound when the engine does not have it (nothing is
        pulled), EngineAPIError when `ref` is not a reference the engine accepts."""
        with translated():
            return Image(self._sdk.images.get(ref))

    def find_image(self, ref: str) -> Image | None:
        """The image `ref` names, or None when the engine does not have it."""
        try:
            return self.image(ref)
        except ImageNotFound:
            return None

    def remove_image(self, ref: str, *, prune: bool = True) -> None:
        with translated():
            self._sdk.api.remove_image(ref, noprune=not prune)

    def build(
        self,
        context_dir: str,
        *,
        tag: str,
        buildargs: Mapping[str, str],
        labels: Mapping[str, str],
        read_timeout_s: float,
        dockerfile: str = "Dockerfile",
        target: str = "",
    ) -> Iterator[dict[str, Any]]:
        """Build an image from `context_dir` (with `dockerfile`, relative to it, up to stage
        `target` when given), yielding the engine's decoded progress messages as they come (the
        last ones carry the image ID); nothing is pulled."""
        with translated():
            stream = self._sdk.api.build(
                path=context_dir,
                dockerfile=dockerfile,
                target=target or None,
                tag=tag,
                buildargs=dict(buildargs),
                labels=dict(labels),
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
                timeout=read_timeout_s,
            )
            yield from stream

    def push(self, repository: str, tag: str, *, read_timeout_s: float) -> Iterator[dict[str, Any]]:
        """Push `repository:tag`, yielding the engine's decoded progress messages (the last
        one with the digest). A push may stay silent longer than the connect-sized timeout
        of other calls: its reads wait up to `read_timeout_s`."""
        api = self._sdk.api
        saved = api.timeout
        api.timeout = read_timeout_s
        try:
            with translated():
                yield from api.push(repository, tag=tag, stream=True, decode=True)
        finally:
            api.timeout = saved

    def pull(self, ref: str, *, read_timeout_s: float) -> Iterator[dict[str, Any]]:
        """Pull `ref` (`repository[:tag]@sha256:...`: by its digest, the tag ignored, as the
        engine does), yielding the engine's decoded progress messages. Reads wait up to
        `read_timeout_s`, as a push's."""
        name, _, digest = ref.rpartition("@")
        if not name:
            name, digest = ref, ""
        # "registry:5000/repo:1.2.3" -> "registry:5000/repo": a tag after the last slash.
        head, slash, last = name.rpartition("/")
        repository = head + slash + last.split(":", 1)[0]
        tag = digest or (last.split(":", 1)[1] if ":" in last else "latest")
        api = self._sdk.api
        saved = api.timeout
        api.timeout = read_timeout_s
        try:
            with translated():
                yield from api.pull(repository, tag=tag, stream=True, decode=True)
        finally:
            api.timeout = saved

    # -- volumes -------------------------------------------------------------------------

    def volumes(self, *, labels: Sequence[str] = ()) -> list[Volume]:
        with translated():
            found = self._sdk.volumes.list(filters={"label": list(labels)})
        return [Volume(str(v.name), dict(v.attrs.get("Labels") or {})) for v in found]

    def volume_exists(self, name: str) -> bool:
        try:
            with translated():
                self._sdk.volumes.get(name)
        except NotFound:
            return False
        return True

    def create_volume(self, name: str, *, labels: Mapping[str, str]) -> Volume:
        with translated():
            self._sdk.volumes.create(name=name, labels=dict(labels))
        return Volume(name, dict(labels))

    # -- the connection ------------------------------------------------------------------

    def ping(self) -> None:
        with translated():
            self._sdk.ping()

    def close(self) -> None:
        self._sdk.close()
