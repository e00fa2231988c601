"""The test cluster itself: the facts the swarm tier's other tests rely on.

- 3 nodes, Ready and Active, every one a manager; their engines on overlay2.
- A 3-replica service on an attachable overlay with endpoint_mode dnsrr spreads over the 3 nodes;
  each task answers over the overlay from a container on another node, and `tasks.<service>`
  resolves to every task.
- A host-mode published port answers on each node's address from the machine.
- A drained node's tasks move to the others; a stopped node's tasks are rescheduled on the others,
  and the node rejoins Ready when started again.

The services are plain debian:bookworm-slim running a Perl HTTP server (perl-base is in the
image) that answers with its node's hostname and task slot.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from tests.helpers.swarm_cluster import SwarmCluster, SwarmNode, wait_for

IMAGE = "debian:bookworm-slim"
NETWORK = "dtswn-net"
WEB = "dtswn-web"
SPREAD = "dtswn-spread"
CLIENT = "dtswn-client"
PORT = 18300

# Answers every request with "<node hostname> <task slot>"; reads the request's headers first so
# closing the socket never resets the client's connection.
SERVER = r"""
use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalPort => 8000, Listen => 64, ReuseAddr => 1) or die "$!";
while (my $c = $s->accept) {
    while (my $line = <$c>) { last if $line =~ /^\r?\n$/ }
    print $c "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
        . "$ENV{NODE} $ENV{SLOT}\n";
    close $c;
}
"""
HEALTHCHECK = 'perl -MIO::Socket::INET -e "exit !IO::Socket::INET->new(q(127.0.0.1:8000))"'
# A client's GET over the overlay: prints the body.
CLIENT_GET = r"""
use IO::Socket::INET;
my $c = IO::Socket::INET->new(PeerAddr => $ARGV[0], PeerPort => 8000, Timeout => 5) or die "$!";
print $c "GET / HTTP/1.0\r\nHost: x\r\n\r\n";
my $r = join "", <$c>;
$r =~ s/.*?\r\n\r\n//s;
print $r;
"""


def _create_service(cluster: SwarmCluster, name: str, *extra: str) -> None:
    cluster.docker(
        cluster.manager,
        "service",
        "create",
        "--detach",
        "--no-resolve-image",  # the image is loaded into each node, in no registry
        "--name",
        name,
        "--replicas",
        "3",
        "--network",
        NETWORK,
        "--endpoint-mode",
        "dnsrr",
        "--env",
        "NODE={{.Node.Hostname}}",
        "--env",
        "SLOT={{.Task.Slot}}",
        "--health-cmd",
        HEALTHCHECK,
        "--health-interval",
        "1s",
        "--health-start-period",
        "10s",
        "--stop-grace-period",
        "1s",
        *extra,
        IMAGE,
        "perl",
        "-e",
        SERVER,
    )


def running_tasks(cluster: SwarmCluster, service: str) -> dict[str, str]:
    """task id -> node hostname, of the service's tasks that run (healthy when checked)."""
    out = cluster.docker(
        cluster.control_node(),
        "service",
        "ps",
        service,
        "--filter",
        "desired-state=running",
        "--format",
        "{{.ID}} {{.Node}} {{.CurrentState}}",
        "--no-trunc",
    )
    tasks = {}
    for line in out.splitlines():
        task_id, node, state = line.split(maxsplit=2)
        if state.startswith("Running"):
            tasks[task_id] = node
    return tasks


def _wait_tasks(cluster: SwarmCluster, service: str, *, on: set[str], timeout_s: float = 90):
    """Until the service runs 3 tasks, all on nodes of `on`, every one healthy."""

    def settled() -> dict[str, str] | None:
        tasks = running_tasks(cluster, service)
        if len(tasks) != 3 or not set(tasks.values()) <= on:
            return None
        return (
            tasks
            if all(_task_healthy(cluster, task, node) for task, node in tasks.items())
            else None
        )

    return wait_for(f"3 healthy tasks of {service} on {sorted(on)}", settled, timeout_s=timeout_s)


def _task_healthy(cluster: SwarmCluster, task_id: str, node_name: str) -> bool:
    container = cluster.docker(
        cluster.control_node(), "inspect", "-f", "{{.Status.ContainerStatus.ContainerID}}", task_id
    ).strip()
    health = cluster.docker(
        cluster.node(node_name), "inspect", "-f", "{{.State.Health.Status}}", container
    ).strip()
    return health == "healthy"


def _task_address(cluster: SwarmCluster, task_id: str) -> str:
    out = cluster.docker(cluster.manager, "inspect", "-f", "{{json .NetworksAttachments}}", task_id)
    for attachment in json.loads(out):
        if attachment["Network"]["Spec"]["Name"] == NETWORK:
            return str(attachment["Addresses"][0].split("/")[0])
    raise AssertionError(f"task {task_id} has no address on {NETWORK}")


@pytest.fixture(scope="module")
def overlay(swarm_cluster: SwarmCluster) -> Iterator[SwarmCluster]:
    """The attachable overlay, the image on every node and a client container on each node."""
    swarm_cluster.load_images(IMAGE)
    swarm_cluster.docker(
        swarm_cluster.manager, "network", "create", "-d", "overlay", "--attachable", NETWORK
    )
    try:
        for node in swarm_cluster.nodes:
            swarm_cluster.docker(
                node, "run", "-d", "--name", CLIENT, "--network", NETWORK, IMAGE, "sleep", "3600"
            )
        yield swarm_cluster
    finally:
        _remove_leftovers(swarm_cluster)


def _remove_leftovers(cluster: SwarmCluster) -> None:
    control = cluster.control_node()
    services = cluster.docker(control, "service", "ls", "--format", "{{.Name}}").split()
    for service in {WEB, SPREAD} & set(services):
        cluster.docker(control, "service", "rm", service, timeout_s=60)
    for node in cluster.nodes:
        cluster.docker(node, "rm", "-f", CLIENT)
    wait_for(f"{NETWORK} removed", lambda: _remove_network(cluster), timeout_s=60)


def _remove_network(cluster: SwarmCluster) -> bool:
    # The network goes once the removed services' tasks have stopped on every node.
    cluster.docker(cluster.manager, "network", "rm", NETWORK)
    return True


@pytest.fixture(scope="module")
def web(overlay: SwarmCluster) -> dict[str, str]:
    """The 3-replica web service, its port published in host mode on each node: task -> node."""
    _create_service(overlay, WEB, "--publish", f"mode=host,published={PORT},target=8000")
    return _wait_tasks(overlay, WEB, on={node.name for node in overlay.nodes})


def _get_over_overlay(cluster: SwarmCluster, client: SwarmNode, address: str) -> str:
    return cluster.docker(client, "exec", CLIENT, "perl", "-e", CLIENT_GET, address).strip()


def test_the_cluster_forms_with_three_ready_nodes(swarm_cluster: SwarmCluster) -> None:
    states = swarm_cluster.node_states()
    assert set(states) == {"dtsw-node-1", "dtsw-node-2", "dtsw-node-3"}
    assert {state["state"] for state in states.values()} == {"ready"}
    assert {state["availability"] for state in states.values()} == {"active"}
    # Every node a manager (a stopped one leaves a quorum); the leader may move when one stops.
    assert sorted(state["manager"] for state in states.values()) == [
        "leader",
        "reachable",
        "reachable",
    ]
    for node in swarm_cluster.nodes:
        info = swarm_cluster.docker(node, "info", "--format", "{{.Swarm.NodeAddr}} {{.Driver}}")
        assert info.split() == [node.address, "overlay2"]


def test_a_dnsrr_service_spreads_and_each_task_answers_across_nodes(
    overlay: SwarmCluster, web: dict[str, str]
) -> None:
    assert sorted(web.values()) == ["dtsw-node-1", "dtsw-node-2", "dtsw-node-3"]
    addresses = {task: _task_address(overlay, task) for task in web}
    for task, node_name in web.items():
        client = next(node for node in overlay.nodes if node.name != node_name)
        answer = _get_over_overlay(overlay, client, addresses[task])
        assert answer.split()[0] == node_name, (task, client.name, answer)
    # dnsrr: the service's name and tasks.<service> resolve to every task, no virtual IP.
    resolved = overlay.docker(
        overlay.manager, "exec", CLIENT, "getent", "ahostsv4", f"tasks.{WEB}"
    ).split()
    assert {word for word in resolved if word[0].isdigit()} == set(addresses.values())
    by_name = overlay.docker(overlay.manager, "exec", CLIENT, "getent", "ahostsv4", WEB).split()
    assert {word for word in by_name if word[0].isdigit()} == set(addresses.values())


def test_a_host_mode_port_answers_on_each_node_from_the_machine(
    overlay: SwarmCluster, web: dict[str, str]
) -> None:
    for node in overlay.nodes:
        response = requests.get(f"http://{node.address}:{PORT}/", timeout=5)
        assert response.status_code == 200
        assert response.text.split()[0] == node.name


def test_a_drained_node_s_tasks_move_to_the_others(overlay: SwarmCluster) -> None:
    _create_service(overlay, SPREAD)
    everywhere = {node.name for node in overlay.nodes}
    before = _wait_tasks(overlay, SPREAD, on=everywhere)
    assert set(before.values()) == everywhere
    drained = overlay.nodes[2]
    overlay.drain(drained)
    try:
        after = _wait_tasks(overlay, SPREAD, on=everywhere - {drained.name})
        assert drained.name not in after.values()
        assert overlay.running_tasks(drained) == []
    finally:
        overlay.activate(drained)
    assert overlay.node_states()[drained.name]["availability"] == "active"


def test_a_stopped_node_s_tasks_are_rescheduled_on_the_others(overlay: SwarmCluster) -> None:
    # After the drain test the tasks run on the first two nodes: stop the second (any node but
    # the first may stop; a test that needs the first stopped can, the quorum stays).
    everywhere = {node.name for node in overlay.nodes}
    before = _wait_tasks(overlay, SPREAD, on=everywhere)
    stopped = next(node for node in overlay.nodes[1:] if node.name in before.values())
    overlay.stop_node(stopped)
    try:
        after = _wait_tasks(overlay, SPREAD, on=everywhere - {stopped.name})
        assert set(after.values()) == everywhere - {stopped.name}
        # The other two managers keep the quorum: the swarm still takes changes.
        overlay.docker(
            overlay.control_node(), "service", "update", "--detach", "--env-add", "X=1", SPREAD
        )
    finally:
        overlay.start_node(stopped)
    assert overlay.node_states()[stopped.name]["state"] == "ready"
