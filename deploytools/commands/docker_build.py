"""`docker build` with BuildKit, as argv: the build path for images that need build secrets.

The engine's API builds with the classic builder, which has no secrets; BuildKit mounts a
secret into the one RUN step that asks for it (`RUN --mount=type=secret,id=ID`) and never
writes it into a layer. The value is read by the docker client from an environment variable
(`env=NAME`), so it is in no argv.
"""

from __future__ import annotations

from collections.abc import Mapping


def buildkit_build(
    context_dir: str,
    *,
    tag: str,
    dockerfile: str,
    target: str,
    buildargs: Mapping[str, str],
    labels: Mapping[str, str],
    secrets: Mapping[str, str],
    iidfile: str,
) -> list[str]:
    """The argv of one BuildKit build of `context_dir`, tagging `tag` and writing the image ID
    to `iidfile`. `secrets` maps a secret id to the environment variable holding its value."""
    argv = ["docker", "build", "--file", f"{context_dir}/{dockerfile}", "--tag", tag]
    if target:
        argv += ["--target", target]
    for name, value in sorted(buildargs.items()):
        argv += ["--build-arg", f"{name}={value}"]
    for name, value in sorted(labels.items()):
        argv += ["--label", f"{name}={value}"]
    for secret_id, variable in sorted(secrets.items()):
        argv += ["--secret", f"id={secret_id},env={variable}"]
    return [*argv, "--iidfile", iidfile, "--progress", "plain", context_dir]
