"""A service's running containers under the names a report shows them by.

On one engine a container's name says which one it is ("shop-app-1"). On Swarm a task's
container is named after its service, slot and task ("shop_app.2.k3x9...") and runs on one of
the nodes, which its name does not say: a reader of "cpu ... 85%" must know which node to look
at, so there it is "<container> on <node>".
"""

from __future__ import annotations

from deploytools.engine.client import Container
from deploytools.platforms import Platform
from deploytools.platforms.swarm import SwarmPlatform


def running_named(platform: Platform, service: str) -> dict[str, Container]:
    """`service`'s running containers by their shown name: the container's name on one
    engine; on Swarm, each running task's container with its node's hostname added. A task
    whose node does not answer has no container to read, and is left out (as a stopped one)."""
    if not isinstance(platform, SwarmPlatform):
        return {c.name: c for c in platform.containers(service, include_stopped=False)}
    found: dict[str, Container] = {}
    for task in platform.tasks(service, desired_state="running"):
        container = platform.task_container(task)
        if container is not None and container.status == "running":
            found[f"{container.name} on {task.node or task.node_id[:12]}"] = container
    return found


__all__ = ["running_named"]
