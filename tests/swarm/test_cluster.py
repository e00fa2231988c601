"""The test cluster itself: the facts the swarm tier's other tests rely on."""

from __future__ import annotations

from tests.helpers.swarm_cluster import SwarmCluster


def test_the_cluster_forms_with_three_ready_nodes(swarm_cluster: SwarmCluster) -> None:
    states = swarm_cluster.node_states()
    assert set(states) == {"dtsw-node-1", "dtsw-node-2", "dtsw-node-3"}
    assert {state["state"] for state in states.values()} == {"ready"}
    assert {state["availability"] for state in states.values()} == {"active"}
    assert states["dtsw-node-1"]["manager"] == "leader"
    for node in swarm_cluster.nodes:
        info = swarm_cluster.docker(node, "info", "--format", "{{.Swarm.NodeAddr}} {{.Driver}}")
        assert info.split() == [node.address, "overlay2"]
