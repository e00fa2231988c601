"""`platform = "swarm"` and `[environments.NAME.swarm]`: loaded with their defaults, and every
wrong value refused when deploy.toml is loaded, with one line that names it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from deploytools.config import Config, SwarmSettings, node_host_for, parse_config, resolved_view
from deploytools.errors import ConfigError
from tests.helpers.deploy_toml import MINIMAL

BASE = MINIMAL + textwrap.dedent(
    """
    [environments.production]
    docker_host = "ssh://deploy@manager-1.example.com"
    compose_project = "svc-production"
    base_url = "https://svc.example.com"
    platform = "swarm"
    """
)


def load(extra: str = "") -> Config:
    return parse_config(BASE + textwrap.dedent(extra), Path("deploy.toml"))


def test_compose_is_the_default_platform() -> None:
    staging = load().environment("staging")
    assert staging.platform == "compose"
    assert not staging.is_swarm
    assert staging.swarm is None


def test_a_swarm_environment_without_its_table_has_the_defaults() -> None:
    production = load().environment("production")
    assert production.is_swarm
    assert production.swarm_settings == SwarmSettings(
        node_host="ssh://{hostname}",
        replicas=0,
        update_parallelism=1,
        update_delay_s=0.0,
        update_monitor_s=5.0,
        stop_grace_period_s=10.0,
    )


def test_the_swarm_table_is_read() -> None:
    production = load(
        """
        [environments.production.swarm]
        node_host = "tcp://{addr}:2375"
        replicas = 3
        update_parallelism = 2
        update_delay_s = 1
        update_monitor_s = 2.5
        stop_grace_period_s = 20
        placement = { db = ["node.hostname == db-1"] }
        """
    ).environment("production")
    assert production.swarm_settings == SwarmSettings(
        node_host="tcp://{addr}:2375",
        replicas=3,
        update_parallelism=2,
        update_delay_s=1.0,
        update_monitor_s=2.5,
        stop_grace_period_s=20.0,
        placement={"db": ("node.hostname == db-1",)},
    )


def test_resolved_view_shows_the_platform_and_the_swarm_settings() -> None:
    view = resolved_view(load(), environ={})
    assert view["environments"]["staging"]["platform"] == "compose"
    assert "swarm" not in view["environments"]["staging"]
    assert view["environments"]["production"]["swarm"]["node_host"] == "ssh://{hostname}"


def test_node_host_is_filled_from_a_node() -> None:
    assert node_host_for("tcp://{addr}:2375", hostname="n1", addr="10.0.0.5") == (
        "tcp://10.0.0.5:2375"
    )
    assert node_host_for("ssh://deploy@{hostname}", hostname="n1", addr="x") == "ssh://deploy@n1"


BAD = [
    pytest.param(
        BASE.replace('platform = "swarm"', 'platform = "swram"'),
        'deploy.toml: "environments.production.platform" must be one of compose, swarm, '
        'got "swram" (did you mean "swarm"?)',
        id="unknown-platform",
    ),
    pytest.param(
        BASE.replace('platform = "swarm"', "platform = 2"),
        'deploy.toml: "environments.production.platform" must be a string, got integer 2',
        id="platform-not-a-string",
    ),
    pytest.param(
        BASE + "\n[environments.staging.swarm]\nreplicas = 2\n",
        "deploy.toml: [environments.staging.swarm] is only for a Swarm environment: set "
        '"environments.staging.platform" to "swarm", or remove the table',
        id="swarm-table-on-a-compose-environment",
    ),
    pytest.param(
        BASE + "\n[environments.production.swarm]\nreplica = 2\n",
        'deploy.toml: unknown key "environments.production.swarm.replica" '
        '(did you mean "replicas"?)',
        id="unknown-key",
    ),
    pytest.param(
        BASE + '\n[environments.production.swarm]\nreplicas = "3"\n',
        'deploy.toml: "environments.production.swarm.replicas" must be an integer, got string "3"',
        id="replicas-not-an-integer",
    ),
    pytest.param(
        BASE + "\n[environments.production.swarm]\nupdate_parallelism = 0\n",
        'deploy.toml: "environments.production.swarm.update_parallelism" must be at least 1 '
        "and at most 1000, got 0",
        id="parallelism-zero",
    ),
    pytest.param(
        BASE + "\n[environments.production.swarm]\nupdate_monitor_s = -1\n",
        'deploy.toml: "environments.production.swarm.update_monitor_s" must be at least 0 '
        "and at most 3600, got -1.0",
        id="negative-monitor",
    ),
    pytest.param(
        BASE + '\n[environments.production.swarm]\nnode_host = "tcp://{ip}:2375"\n',
        'deploy.toml: "environments.production.swarm.node_host" may name {hostname} and '
        '{addr}, got "{ip}"',
        id="node-host-unknown-field",
    ),
    pytest.param(
        BASE + '\n[environments.production.swarm]\nnode_host = "tcp://10.0.0.1:2375"\n',
        'deploy.toml: "environments.production.swarm.node_host" must be a Docker engine '
        'address with {hostname} or {addr} ("ssh://{hostname}", "tcp://{addr}:2375"), '
        'got "tcp://10.0.0.1:2375"',
        id="node-host-names-no-node",
    ),
    pytest.param(
        BASE + '\n[environments.production.swarm]\nnode_host = "http://{addr}"\n',
        'deploy.toml: "environments.production.swarm.node_host" must be a Docker engine '
        'address with {hostname} or {addr} ("ssh://{hostname}", "tcp://{addr}:2375"), '
        'got "http://{addr}"',
        id="node-host-not-an-engine",
    ),
    pytest.param(
        BASE + "\n[environments.production.swarm]\nplacement = { db = [] }\n",
        'deploy.toml: "environments.production.swarm.placement.db" must list constraints such '
        'as "node.hostname == db-1"',
        id="empty-placement",
    ),
    pytest.param(
        BASE + '\n[environments.production.swarm]\nplacement = { db = "node.role == manager" }\n',
        'deploy.toml: "environments.production.swarm.placement.db" must be a list of strings, '
        'got string "node.role == manager"',
        id="placement-not-a-list",
    ),
    pytest.param(
        BASE + "\n[environments.production.swarm]\nnode_host = 5\n",
        'deploy.toml: "environments.production.swarm.node_host" must be a string, got integer 5',
        id="node-host-not-a-string",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_a_bad_swarm_configuration_is_refused_with_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("deploy.toml"))
    assert caught.value.message == message
    assert caught.value.untouched == "nothing was done"
