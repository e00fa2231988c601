"""The swarm tier: a real 3-node Docker Swarm of docker-in-docker nodes on the local engine
(tests/helpers/swarm_cluster.py). It runs after every other tier (tests/helpers/tiers.py
LAST_TIERS), so the other tiers never wait for its cluster.

    swarm_cluster -> SwarmCluster: 3 nodes, every one a manager, nodes[0] the first; built by the
                     first test that asks (a healthy running cluster is reused) and removed at
                     the end of the session with its volumes and network
                     (DTSW_KEEP_CLUSTER=1 keeps it for a fast rerun)

Stacks and services of this tier's tests are named dtswn*, their host ports 18300-18399;
swarmplat's tests use dtswp* and 18100-18199, swarmdeploy's dtswd* and 18200-18299.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.swarm_cluster import SwarmCluster, ensure_cluster, keep_cluster, remove_cluster


@pytest.fixture(scope="session")
def swarm_cluster() -> Iterator[SwarmCluster]:
    cluster = ensure_cluster(3)
    yield cluster
    if not keep_cluster():
        remove_cluster()
