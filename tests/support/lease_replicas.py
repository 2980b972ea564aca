"""In-process replicas' coordination loops (`fleet.controller.replicas.Replica`) over real HTTP against a
`fleet sim` management cluster named ``mgmt``, with the short lease timings the tests under
tests/controller use (4 s duration, 2 s renew deadline, 0.5 s retry). Shared by test_replicas_sim.py,
test_replicas_busy.py and test_replicas_shutdown.py.
"""

from __future__ import annotations

from fleet.clients import kube, management
from fleet.controller import replicas
from fleet.core import coordination, leases
from fleet.sim import testing

T = leases.Timings(duration=4, renew_deadline=2, retry=0.5)
BASE = kube.Settings(request_timeout=2.0, connect_timeout=1.0, retry_budget=3.0, backoff_base=0.05)
SLACK = 2.0  # scheduling on a loaded machine


def make(sim: testing.SimHandle, me: str, *, shards: int) -> replicas.Replica:
    """Replica `me` of instance ``fleet`` with `shards` shards, its Lease client on the sim's ``mgmt``."""
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    settings = management.settings_for(BASE, timings=T, replica=me)
    client = management.Leases(
        kube.Client(cluster="mgmt", context=kc.context("mgmt"), settings=settings), instance="fleet"
    )
    return replicas.Replica(client, coordination.Config(instance="fleet", me=me, shards=shards, timings=T))
