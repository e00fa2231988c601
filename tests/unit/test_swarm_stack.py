"""The stack file of a Swarm environment, rendered from the normalized Compose model: exact
dicts, for the reference stack (docker-compose.prod.yml), the second example (notes-api), and
each translation; and the argv that render and deploy it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from deploytools.commands import stack as stack_cmd
from deploytools.commands.compose import COMPOSE_V1, COMPOSE_V2, ComposeCli
from deploytools.config import SwarmSettings
from deploytools.errors import ConfigError
from deploytools.platforms.swarm_stack import app_network, render

DATA = Path(__file__).resolve().parents[1] / "data" / "swarm"
#: The update every app service gets with the default settings.
DEFAULT_UPDATE = {
    "parallelism": 1,
    "delay": "0s",
    "failure_action": "pause",
    "monitor": "5s",
    "order": "start-first",
}
OVERLAY = {"driver": "overlay", "attachable": True}


def normalized(name: str) -> dict[str, Any]:
    """`docker-compose config` of a repository's Compose file, as stored in tests/data/swarm
    (docker-compose 1.29; the secrets set to test values)."""
    model: dict[str, Any] = yaml.safe_load((DATA / name).read_text())
    return model


def test_the_reference_stack_renders_to_a_3_8_stack_file() -> None:
    model = normalized("prod-normalized.yml")
    settings = SwarmSettings(node_host="tcp://{addr}:2375", replicas=3, update_monitor_s=2.5)
    rendered = render(model, stack="dtswp1", app_service="app", settings=settings)
    proxy_conf = model["services"]["proxy"]["environment"]["DEPLOYTOOLS_PROXY_CONF"]
    assert rendered == {
        "version": "3.8",
        "services": {
            "app": {
                "environment": {
                    "APP_SECRET_KEY": "0123456789abcdef0123",
                    "DATABASE_HOST": "db",
                    "DATABASE_PORT": "5432",
                    "LOG_LEVEL": "info",
                    "POSTGRES_DB": "rbac",
                    "POSTGRES_PASSWORD": "pw",
                    "POSTGRES_USER": "rbac",
                    "RBAC_API_SLOW_MS": "0",
                },
                "expose": ["8080"],
                "healthcheck": {
                    "interval": "2s",
                    "retries": 3,
                    "start_period": "10s",
                    "test": [
                        "CMD",
                        "bash",
                        "-c",
                        "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health "
                        "HTTP/1.0\\r\\n\\r\\n' >&3 && read -r status <&3 && "
                        "[[ $$status == *' 200 '* ]]",
                    ],
                    "timeout": "3s",
                },
                "image": "ghcr.io/example/rbac-api:latest",
                "labels": {"deploytools.app.version": "unknown"},
                "stop_grace_period": "10s",
                "deploy": {
                    "restart_policy": {"condition": "any"},
                    "endpoint_mode": "dnsrr",
                    "replicas": 3,
                    "update_config": {**DEFAULT_UPDATE, "monitor": "2.5s"},
                },
            },
            "db": {
                "environment": {
                    "POSTGRES_DB": "rbac",
                    "POSTGRES_PASSWORD": "pw",
                    "POSTGRES_USER": "rbac",
                },
                "healthcheck": {
                    "interval": "2s",
                    "retries": 30,
                    "start_period": "5s",
                    "test": [
                        "CMD-SHELL",
                        'pg_isready -h 127.0.0.1 -U "$$POSTGRES_USER" -d "$$POSTGRES_DB"',
                    ],
                    "timeout": "3s",
                },
                "image": "postgres:16",
                "stop_grace_period": "30s",
                "volumes": ["db-data:/var/lib/postgresql/data:rw"],
                "deploy": {"restart_policy": {"condition": "any"}, "endpoint_mode": "dnsrr"},
            },
            "proxy": {
                "command": [
                    "sh",
                    "-c",
                    "printf '%s' \"$$DEPLOYTOOLS_PROXY_CONF\" > /tmp/haproxy.cfg && exec "
                    "haproxy -db -f /tmp/haproxy.cfg",
                ],
                "environment": {"DEPLOYTOOLS_PROXY_CONF": proxy_conf},
                "healthcheck": {
                    "interval": "2s",
                    "retries": 3,
                    "start_period": "5s",
                    "test": [
                        "CMD",
                        "bash",
                        "-c",
                        "exec 3<>/dev/tcp/127.0.0.1/80 && printf 'GET /proxy-health "
                        "HTTP/1.0\\r\\n\\r\\n' >&3 && read -r status <&3 && "
                        "[[ $$status == *' 200 '* ]]",
                    ],
                    "timeout": "3s",
                },
                "image": "haproxy:2.8",
                "ports": [{"target": 80, "published": 8080, "protocol": "tcp", "mode": "host"}],
                "stop_grace_period": "15s",
                "stop_signal": "SIGUSR1",
                "deploy": {"restart_policy": {"condition": "any"}, "endpoint_mode": "dnsrr"},
            },
        },
        "networks": {"default": OVERLAY},
        "volumes": {"db-data": {}},
    }
    assert app_network(rendered, stack="dtswp1", app_service="app") == "dtswp1_default"


def test_the_notes_api_stack_renders_with_the_default_settings() -> None:
    rendered = render(
        normalized("notes-normalized.yml"),
        stack="notes-prod",
        app_service="api",
        settings=SwarmSettings(),
    )
    assert rendered == {
        "version": "3.8",
        "services": {
            "api": {
                "environment": {
                    "FIRST_SUPERUSER": "admin@example.com",
                    "FIRST_SUPERUSER_PASSWORD": "pw2",
                    "PGDATABASE": "notes",
                    "PGHOST": "postgres",
                    "PGPASSWORD": "pw",
                    "PGUSER": "notes",
                    "SECRET_KEY": "0123456789abcdef",
                },
                "expose": ["8000"],
                "healthcheck": {
                    "interval": "3s",
                    "retries": 5,
                    "start_period": "10s",
                    "test": [
                        "CMD",
                        "python3",
                        "-c",
                        "import urllib.request as u; "
                        "u.urlopen('http://127.0.0.1:8000/healthz', timeout=2)",
                    ],
                    "timeout": "3s",
                },
                "image": "ghcr.io/example/notes-api:latest",
                "stop_grace_period": "10s",
                "deploy": {
                    "restart_policy": {"condition": "any"},
                    "endpoint_mode": "dnsrr",
                    "replicas": 1,
                    "update_config": DEFAULT_UPDATE,
                },
            },
            "postgres": {
                "environment": {
                    "POSTGRES_DB": "notes",
                    "POSTGRES_PASSWORD": "pw",
                    "POSTGRES_USER": "notes",
                },
                "healthcheck": {
                    "interval": "3s",
                    "retries": 20,
                    "test": ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", "notes", "-d", "notes"],
                    "timeout": "3s",
                },
                "image": "postgres:16",
                "volumes": ["pgdata:/var/lib/postgresql/data:rw"],
                "deploy": {"restart_policy": {"condition": "any"}, "endpoint_mode": "dnsrr"},
            },
        },
        "networks": {"default": OVERLAY},
        "volumes": {"pgdata": {}},
    }


def one(app: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"services": {"app": {"image": "svc:1", **app}}, **top}


def test_compose_2_keys_are_translated_into_deploy() -> None:
    rendered = render(
        one(
            {
                "build": {"context": "."},
                "container_name": "svc",
                "depends_on": {"db": {"condition": "service_healthy"}},
                "restart": "on-failure:3",
                "mem_limit": 536870912,
                "mem_reservation": "128m",
                "cpus": 0.5,
                "scale": 2,
            }
        ),
        stack="s",
        app_service="app",
        settings=SwarmSettings(update_parallelism=2, update_delay_s=1, stop_grace_period_s=20),
    )
    assert rendered["services"]["app"] == {
        "image": "svc:1",
        "stop_grace_period": "20s",
        "deploy": {
            "restart_policy": {"condition": "on-failure"},
            "resources": {
                "limits": {"memory": "536870912b", "cpus": "0.5"},
                "reservations": {"memory": "128m"},
            },
            "replicas": 2,
            "endpoint_mode": "dnsrr",
            "update_config": {**DEFAULT_UPDATE, "parallelism": 2, "delay": "1s"},
        },
    }


def test_the_files_deploy_section_is_kept_and_the_settings_replicas_win() -> None:
    deploy = {
        "replicas": 2,
        "placement": {"constraints": ["node.role == worker"]},
        "restart_policy": {"condition": "any", "delay": "2s"},
        "resources": {"limits": {"memory": "1g"}},
    }
    model = one({"deploy": deploy, "restart": "no", "mem_limit": "2g"})
    kept = render(model, stack="s", app_service="app", settings=SwarmSettings())
    assert kept["services"]["app"]["deploy"] == {
        **deploy,
        "endpoint_mode": "dnsrr",
        "update_config": DEFAULT_UPDATE,
    }
    more = render(model, stack="s", app_service="app", settings=SwarmSettings(replicas=5))
    assert more["services"]["app"]["deploy"]["replicas"] == 5


def test_published_ports_are_host_mode_in_long_form() -> None:
    ports = [
        "8080:80",
        "127.0.0.1:9090:90/udp",
        "7000",
        7001,
        {
            "target": 443,
            "published": "8443",
            "protocol": "tcp",
            "mode": "ingress",
            "host_ip": "127.0.0.1",
        },
    ]
    rendered = render(one({"ports": ports}), stack="s", app_service="app", settings=SwarmSettings())
    assert rendered["services"]["app"]["ports"] == [
        {"target": 80, "published": 8080, "protocol": "tcp", "mode": "host"},
        {"target": 90, "published": 9090, "protocol": "udp", "mode": "host"},
        {"target": 7000, "protocol": "tcp", "mode": "host"},
        {"target": 7001, "protocol": "tcp", "mode": "host"},
        {"target": 443, "published": 8443, "protocol": "tcp", "mode": "host"},
    ]


def test_every_network_is_an_attachable_overlay_but_an_external_one() -> None:
    model = {
        "services": {
            "app": {"image": "svc:1", "networks": {"front": None, "back": {"aliases": ["api"]}}},
            "db": {"image": "pg", "networks": ["back"]},
        },
        "networks": {
            "front": {"name": "edge", "external": True},
            "back": {"driver": "bridge", "driver_opts": {"com.docker.network.mtu": "1400"}},
        },
    }
    rendered = render(model, stack="s", app_service="app", settings=SwarmSettings())
    assert rendered["networks"] == {"front": {"name": "edge", "external": True}, "back": OVERLAY}
    assert app_network(rendered, stack="s", app_service="app") == "edge"
    assert rendered["services"]["app"]["networks"] == {"front": None, "back": {"aliases": ["api"]}}


def test_names_compose_v2_writes_are_left_to_swarm() -> None:
    """Compose v2's `config` writes the top-level name and each network's and volume's
    project-prefixed name; Swarm prefixes them with the stack's name itself."""
    model = {
        "name": "s",
        "services": {"app": {"image": "svc:1", "networks": {"default": None}}},
        "networks": {"default": {"name": "s_default"}},
        "volumes": {"data": {"name": "s_data"}, "kept": {"name": "shared", "external": True}},
    }
    rendered = render(model, stack="s", app_service="app", settings=SwarmSettings())
    assert rendered["networks"] == {"default": OVERLAY}
    assert rendered["volumes"] == {"data": {}, "kept": {"name": "shared", "external": True}}
    assert app_network(rendered, stack="s", app_service="app") == "s_default"


REFUSED = [
    pytest.param(
        one({"privileged": True, "network_mode": "host"}),
        'service "app" uses network_mode, privileged, which a Swarm stack does not take',
        id="unsupported-keys",
    ),
    pytest.param(
        {"services": {"app": {"build": "."}}},
        'service "app" has no image: a Swarm stack runs images, it does not build them',
        id="build-only",
    ),
    pytest.param(
        {"services": {"web": {"image": "svc:1"}}},
        'the Compose files define no service "app" (project.app_service)',
        id="no-app-service",
    ),
    pytest.param(
        one({"ports": ["8000-8010:8000-8010"]}),
        'service "app" publishes "8000-8010:8000-8010": a range or a name is not supported '
        "on Swarm",
        id="port-range",
    ),
]


@pytest.mark.parametrize(("model", "message"), REFUSED)
def test_what_a_stack_cannot_take_is_refused_by_name(model: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        render(model, stack="s", app_service="app", settings=SwarmSettings())
    assert caught.value.message == message
    assert caught.value.untouched == "nothing was deployed"


def test_the_stack_argv() -> None:
    v1 = ComposeCli(prefix=COMPOSE_V1, version="1.29.2")
    v2 = ComposeCli(prefix=COMPOSE_V2, version="2.24.0")
    assert stack_cmd.compose_config(v1, "dtswp1", ["a.yml", "b.yml"]) == [
        "docker-compose",
        "--project-name",
        "dtswp1",
        "--file",
        "a.yml",
        "--file",
        "b.yml",
        "config",
    ]
    assert stack_cmd.compose_config(v2, "p", ["a.yml"]) == [
        "docker",
        "compose",
        "--project-name",
        "p",
        "--file",
        "a.yml",
        "config",
    ]
    assert stack_cmd.deploy("dtswp1") == [
        "docker",
        "stack",
        "deploy",
        "--compose-file",
        "-",
        "--resolve-image",
        "never",
        "dtswp1",
    ]
    assert stack_cmd.deploy("p", prune=True, resolve_image="changed") == [
        "docker",
        "stack",
        "deploy",
        "--compose-file",
        "-",
        "--resolve-image",
        "changed",
        "--prune",
        "p",
    ]
    assert stack_cmd.remove("dtswp1") == ["docker", "stack", "rm", "dtswp1"]


def test_placement_constraints_of_the_settings_are_added_to_the_files() -> None:
    model = {
        "services": {
            "app": {"image": "svc:1"},
            "db": {
                "image": "pg",
                "deploy": {"placement": {"constraints": ["node.role == manager"]}},
            },
        }
    }
    settings = SwarmSettings(placement={"db": ("node.hostname == db-1",)})
    rendered = render(model, stack="s", app_service="app", settings=settings)
    assert rendered["services"]["db"]["deploy"] == {
        "placement": {"constraints": ["node.role == manager", "node.hostname == db-1"]},
        "endpoint_mode": "dnsrr",
    }
    assert "placement" not in rendered["services"]["app"]["deploy"]
