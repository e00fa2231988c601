"""The stack file a Swarm environment is deployed with, rendered from its Compose files.

`render` is a pure function: the normalized Compose model (`docker-compose config`'s output,
parsed) and the environment's Swarm settings in, a version "3.8" stack file (a dict, for
`docker stack deploy --compose-file -`) out. The team keeps one set of Compose files; what
Swarm needs differently is decided here, once:

- keys Swarm does not use are dropped (`build`, `container_name`, `depends_on`: Swarm starts
  services in any order, and the app waits for its database by its own health check) or
  translated (`restart` -> `deploy.restart_policy`, `mem_limit`/`cpus` -> `deploy.resources`,
  `scale` -> `deploy.replicas`);
- every network is an attachable overlay: one-off containers (a migration job, deploytools'
  proxy) join the stack's network;
- every service is reached by DNS round robin (`endpoint_mode: dnsrr`), and published ports
  are `mode: host`: Swarm's routing mesh and virtual IPs need IPVS in the kernel, which not
  every host has, and the mesh drops requests during an update (see docs/configuration.md);
- the app service gets its replicas and its rolling update (`update_config`: start-first,
  pause on failure) from deploy.toml's `[environments.NAME.swarm]`, and any service the
  placement constraints it names there (the database on the node that holds its volume).

A key that has no meaning on Swarm and no translation is refused with a ConfigError naming it,
rather than dropped in silence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deploytools.config import SwarmSettings
from deploytools.errors import ConfigError

STACK_VERSION = "3.8"

#: Compose keys of a service that `docker stack deploy` takes as they are (format 3.8).
KEPT_SERVICE_KEYS = frozenset(
    {
        "cap_add",
        "cap_drop",
        "command",
        "configs",
        "deploy",
        "devices",
        "dns",
        "dns_search",
        "domainname",
        "entrypoint",
        "env_file",
        "environment",
        "expose",
        "extra_hosts",
        "healthcheck",
        "hostname",
        "image",
        "init",
        "ipc",
        "isolation",
        "labels",
        "logging",
        "networks",
        "pid",
        "ports",
        "read_only",
        "secrets",
        "security_opt",
        "shm_size",
        "stdin_open",
        "stop_grace_period",
        "stop_signal",
        "sysctls",
        "tmpfs",
        "tty",
        "ulimits",
        "user",
        "userns_mode",
        "volumes",
        "working_dir",
    }
)
#: Keys Swarm has no use for: the stack file does without them.
DROPPED_SERVICE_KEYS = frozenset(
    {"build", "container_name", "depends_on", "links", "external_links", "pull_policy"}
)
#: A Compose restart policy -> Swarm's restart_policy condition.
RESTART_CONDITIONS = {
    "no": "none",
    "always": "any",
    "unless-stopped": "any",
    "on-failure": "on-failure",
}


def render(
    model: Mapping[str, Any],
    *,
    stack: str,
    app_service: str,
    settings: SwarmSettings,
) -> dict[str, Any]:
    """The version "3.8" stack file of the normalized Compose `model` (see the module's
    docstring).

    :param model: `docker-compose config`'s output, parsed (variables already substituted).
    :param stack: the stack's name (the environment's compose_project): names Compose gave
        as `<project>_<key>` are left to `docker stack deploy`, which gives the same.
    :param app_service: the service released by deploytools: its replicas and update_config.
    :param settings: the environment's `[environments.NAME.swarm]`.
    """
    services_in = model.get("services") or {}
    if app_service not in services_in:
        raise ConfigError(
            f'the Compose files define no service "{app_service}" (project.app_service)',
            untouched="nothing was deployed",
            hint="name the app's service in deploy.toml's project.app_service",
            facts={"services": sorted(services_in)},
        )
    services = {
        name: _service(name, spec, app=name == app_service, settings=settings)
        for name, spec in services_in.items()
    }
    stack_file: dict[str, Any] = {"version": STACK_VERSION, "services": services}
    stack_file["networks"] = _networks(model.get("networks") or {}, services, stack=stack)
    volumes = _named(model.get("volumes") or {}, stack=stack)
    if volumes:
        stack_file["volumes"] = volumes
    for key in ("secrets", "configs"):
        if model.get(key):
            stack_file[key] = dict(model[key])
    return stack_file


def _service(
    name: str, spec: Mapping[str, Any], *, app: bool, settings: SwarmSettings
) -> dict[str, Any]:
    unknown = sorted(set(spec) - KEPT_SERVICE_KEYS - DROPPED_SERVICE_KEYS - _TRANSLATED)
    if unknown:
        raise ConfigError(
            f'service "{name}" uses {", ".join(unknown)}, which a Swarm stack does not take',
            untouched="nothing was deployed",
            hint="remove the key(s) from the Compose file, or express them under deploy:",
            facts={"service": name, "keys": unknown},
        )
    if not spec.get("image"):
        raise ConfigError(
            f'service "{name}" has no image: a Swarm stack runs images, it does not build them',
            untouched="nothing was deployed",
            hint="give the service an image (build it with `deploytools image build`)",
            facts={"service": name},
        )
    out: dict[str, Any] = {k: v for k, v in spec.items() if k in KEPT_SERVICE_KEYS}
    deploy: dict[str, Any] = dict(out.pop("deploy", None) or {})
    restart = spec.get("restart")
    if restart is not None and "restart_policy" not in deploy:
        condition = RESTART_CONDITIONS.get(str(restart).split(":", 1)[0], "any")
        deploy["restart_policy"] = {"condition": condition}
    _resources(spec, deploy)
    if "scale" in spec and "replicas" not in deploy:
        deploy["replicas"] = int(spec["scale"])
    constraints = settings.placement.get(name, ())
    if constraints:
        placement = dict(deploy.get("placement") or {})
        placement["constraints"] = [*placement.get("constraints", ()), *constraints]
        deploy["placement"] = placement
    # Virtual IPs need IPVS (and answer nothing without it): every service is found by DNS.
    deploy["endpoint_mode"] = "dnsrr"
    if app:
        if settings.replicas:
            deploy["replicas"] = settings.replicas
        deploy.setdefault("replicas", 1)
        deploy["update_config"] = {
            "parallelism": settings.update_parallelism,
            "delay": _seconds(settings.update_delay_s),
            "failure_action": "pause",
            "monitor": _seconds(settings.update_monitor_s),
            "order": "start-first",
        }
        out["stop_grace_period"] = _seconds(settings.stop_grace_period_s)
    out["deploy"] = deploy
    if "ports" in out:
        out["ports"] = [_host_port(name, port) for port in out["ports"]]
    return out


#: Compose 2.x keys translated into `deploy:` (resources, replicas, restart policy).
_TRANSLATED = frozenset({"restart", "mem_limit", "mem_reservation", "cpus", "scale"})


def _resources(spec: Mapping[str, Any], deploy: dict[str, Any]) -> None:
    """mem_limit / cpus / mem_reservation (Compose 2.x) -> deploy.resources, unless the file
    already says."""
    limits: dict[str, Any] = {}
    reservations: dict[str, Any] = {}
    if spec.get("mem_limit") is not None:
        limits["memory"] = _memory(spec["mem_limit"])
    if spec.get("cpus") is not None:
        limits["cpus"] = str(spec["cpus"])
    if spec.get("mem_reservation") is not None:
        reservations["memory"] = _memory(spec["mem_reservation"])
    if not (limits or reservations) or "resources" in deploy:
        return
    resources: dict[str, Any] = {}
    if limits:
        resources["limits"] = limits
    if reservations:
        resources["reservations"] = reservations
    deploy["resources"] = resources


def _memory(value: Any) -> str:
    """Compose's normalized memory (bytes, an int) or a size string, as the stack file takes it."""
    return f"{value}b" if isinstance(value, int) else str(value)


def _seconds(value: float) -> str:
    """A duration as Swarm's files write it: "5s", "0.5s"."""
    return f"{value:g}s"


def _host_port(service: str, port: Any) -> dict[str, Any]:
    """One published port, long form, `mode: host` (the routing mesh is not used)."""
    if isinstance(port, int | str):
        port = _short_port(service, str(port))
    if not isinstance(port, Mapping) or "target" not in port:
        raise ConfigError(
            f'service "{service}" publishes a port deploytools cannot read: {port!r}',
            untouched="nothing was deployed",
            facts={"service": service},
        )
    out: dict[str, Any] = {"target": int(port["target"])}
    if port.get("published") not in (None, ""):
        out["published"] = int(port["published"])
    out["protocol"] = str(port.get("protocol") or "tcp")
    out["mode"] = "host"
    return out


def _short_port(service: str, text: str) -> dict[str, Any]:
    """A short port ("8080:80", "80", "127.0.0.1:8080:80/tcp") -> the long form. A host
    address is dropped: a host-mode port is published on every interface of the task's node."""
    spec, _, protocol = text.partition("/")
    parts = spec.split(":")
    if not parts[-1].isdigit() or (len(parts) > 1 and not parts[-2].isdigit()):
        raise ConfigError(
            f'service "{service}" publishes "{text}": a range or a name is not supported on Swarm',
            untouched="nothing was deployed",
            facts={"service": service},
        )
    out: dict[str, Any] = {"target": int(parts[-1]), "protocol": protocol or "tcp"}
    if len(parts) > 1:
        out["published"] = int(parts[-2])
    return out


def _networks(
    declared: Mapping[str, Any], services: Mapping[str, dict[str, Any]], *, stack: str
) -> dict[str, Any]:
    """Every network the services use, an attachable overlay (an external one is left as the
    file says); `default` when a service names none."""
    networks: dict[str, Any] = {}
    for key, spec in declared.items():
        spec = dict(spec or {})
        if not spec.get("external"):
            if spec.get("name") == f"{stack}_{key}":
                del spec["name"]  # Compose v2 writes the name it would give; Swarm gives the same
            if spec.get("driver", "overlay") != "overlay":
                spec.pop("driver_opts", None)  # a bridge's options mean nothing to an overlay
            spec["driver"] = "overlay"
            spec["attachable"] = True
        networks[key] = spec
    if any(not s.get("networks") for s in services.values()) or "default" in _used(services):
        networks.setdefault("default", {"driver": "overlay", "attachable": True})
    return networks


def _used(services: Mapping[str, dict[str, Any]]) -> set[str]:
    used: set[str] = set()
    for spec in services.values():
        used.update(spec.get("networks") or ())
    return used


def _named(declared: Mapping[str, Any], *, stack: str) -> dict[str, Any]:
    """Top-level volumes: Compose v2's written `name` (`<project>_<key>`) left to Swarm."""
    out: dict[str, Any] = {}
    for key, spec in declared.items():
        spec = dict(spec or {})
        if not spec.get("external") and spec.get("name") == f"{stack}_{key}":
            del spec["name"]
        out[key] = spec
    return out


def app_network(stack_file: Mapping[str, Any], *, stack: str, app_service: str) -> str:
    """The name, on the engine, of the network the app service is on first (its stack's
    attachable overlay): where a one-off job and a proxy join it."""
    service = stack_file["services"][app_service]
    named = service.get("networks") or ["default"]
    key = next(iter(named))
    spec = (stack_file.get("networks") or {}).get(key) or {}
    if spec.get("name"):
        return str(spec["name"])
    return f"{stack}_{key}"
