"""Argv for a Swarm stack: rendering its file from the Compose files, deploying and removing it.

The docker CLI talks to the manager named by DOCKER_HOST in its environment (set by the
caller); the stack file goes in on stdin (`--compose-file -`), so its values (the database
password among them) never appear in an argv or on disk.
"""

from __future__ import annotations

from collections.abc import Sequence

from deploytools.commands.compose import ComposeCli, base

DOCKER = "docker"


def compose_config(cli: ComposeCli, project: str, files: Sequence[str]) -> list[str]:
    """Prints the normalized Compose model (variables substituted) that the stack is rendered
    from."""
    return [*base(cli, project, files), "config"]


def deploy(stack: str, *, prune: bool = False, resolve_image: str = "never") -> list[str]:
    """`docker stack deploy` of the stack file on stdin.

    :param prune: remove the stack's services that the file no longer defines.
    :param resolve_image: "never" by default: the nodes run the image they have (pinned by
        digest or loaded onto them), and no registry is asked for one.
    """
    argv = [DOCKER, "stack", "deploy", "--compose-file", "-", "--resolve-image", resolve_image]
    if prune:
        argv.append("--prune")
    return [*argv, stack]


def remove(stack: str) -> list[str]:
    """`docker stack rm`: the stack's services and networks (its volumes stay on the nodes)."""
    return [DOCKER, "stack", "rm", stack]
