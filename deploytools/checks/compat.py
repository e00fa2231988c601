"""Backward compatibility: the previous release's image, run beside the new one on the same
database, must still pass the checks (an expand-only migration promises exactly that, and a
rollback without a restore depends on it).

The previous image is started as a temporary container with the running app container's
environment (minus what the new image itself sets, such as its version) on the same network,
published on 127.0.0.1, and removed afterwards whatever happened.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deploytools.engine.client import ONEOFF_LABEL, PROJECT_LABEL, Container, Engine, OneOff
from deploytools.engine.errors import EngineError, ImageNotFound
from deploytools.errors import DeadlineExceeded, EnvironmentUnreachable
from deploytools.proxy_settings import HealthAnswer

# For annotations only: the check is handed a target, it never opens one.
if TYPE_CHECKING:
    from deploytools.target import Target

COMPAT_LABEL = "deploytools.compat"


@dataclass(frozen=True)
class PreviousApp:
    image: str
    container: str
    url: str


def _environment(app: Container, engine: Engine) -> list[str]:
    """The running app's variables, without those its image sets (version, paths)."""
    env = list(app.attrs.get("Config", {}).get("Env") or [])
    image = engine.find_image(app.image_id)
    own = set(image.env) if image is not None else set()
    return [e for e in env if e not in own]


@contextmanager
def previous_app(
    target: Target,
    service: str,
    image: str,
    *,
    timeout_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    health: HealthAnswer | None = None,
    port: int | None = None,
) -> Iterator[PreviousApp]:
    """Run `image` beside the environment's `service` until the block ends; yield its URL.

    It counts as started once its health route gives the answer `health` expects (the proxy's
    settings: [proxy] health_*; default /health answering 200). `port`: the port it listens
    on (default: the first its running container exposes)."""
    health = health or HealthAnswer()
    running = target.containers(service, include_stopped=False)
    if not running:
        raise EnvironmentUnreachable(
            f"no running {service} container on {target.name} to take the environment from",
            untouched="nothing was started",
        )
    app = running[0]
    engine = target.engine
    networks = list((app.attrs.get("NetworkSettings", {}).get("Networks") or {}).keys())
    exposed = [f"{port}/tcp"] if port else []
    exposed += list((app.attrs.get("Config", {}).get("ExposedPorts") or {}).keys())
    if not networks or not exposed:
        raise EnvironmentUnreachable(
            f"container {app.name} has no network or exposed port to copy",
            untouched="nothing was started",
        )
    name = f"{target.project}-compat-{secrets.token_hex(3)}"
    try:
        container = engine.run(
            OneOff(
                image=image,
                name=name,
                environment=_environment(app, engine),
                network=networks[0],
                publish_on={exposed[0]: "127.0.0.1"},
                labels={COMPAT_LABEL: "true", PROJECT_LABEL: target.project, ONEOFF_LABEL: "True"},
            )
        )
    except ImageNotFound:
        raise EnvironmentUnreachable(
            f"the previous release's image {image} is not on the engine of {target.name}",
            untouched="nothing was started",
            hint="pull or build it there, or leave out --previous-image",
        ) from None
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"][exposed[0]][0]["HostPort"]
        url = f"http://127.0.0.1:{port}"
        # Imported here, not at the top: `deploytools --help` must not load requests
        # (start-up time).
        import requests

        deadline = clock() + timeout_s
        said = "no answer"
        while True:
            try:
                answer = requests.get(f"{url}{health.path}", timeout=2)
                problems = health.problems(answer.status_code, answer.text)
                if not problems:
                    break
                said = "; ".join(problems)
            except requests.RequestException:
                pass
            container.reload()
            if container.status == "exited" or clock() > deadline:
                tail = container.logs(tail=5).decode("utf-8", "replace").strip()
                raise DeadlineExceeded(
                    f"the previous release's image {image} did not answer {health.describe()} "
                    f"within {timeout_s:.0f} s ({said}; container {container.status}): "
                    f"{tail[-300:]}",
                    untouched="the environment itself was not changed",
                )
            time.sleep(0.5)
        yield PreviousApp(image, name, url)
    finally:
        with suppress(EngineError):
            container.remove(force=True, volumes=True)
