"""A commit traced from `fleet serve` into a real Jaeger: the scenario tests/e2e/test_real_tracing.py reads back
and benchmarks/screenshot_jaeger.py shows in Jaeger's UI (docs/tracing.md).

Owns: one run of `fleet serve` against two real API servers (tests/support/kube.py) exporting to a real
Jaeger: a first commit (bundle `base` everywhere, bundle `web` rolled out canary first: a Deployment of 0
replicas, which the real deployment controller makes healthy, and two ConfigMaps), a second commit that
changes `web` and removes one of its ConfigMaps, then a drift made with the real `kubectl edit` and
repaired through the watch. The serve process is stopped with SIGTERM so every queued span is exported.

Does not: read the trace back (the test does), or start the control plane or Jaeger.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import kube, real, serve
from tests.support.reconcile import GitOpsRepo, configmap

BOTH = ["real-1", "real-2"]
CANARY_FIRST = {"waves": [{"name": "canary", "placement": {"clusters": ["real-1"]}}, {"name": "rest"}]}


def deployment(image: str) -> dict[str, Any]:
    """0 replicas: healthy once the real deployment controller observed it (no Pod ever runs here)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
        },
    }


@dataclass
class Traced:
    instance: str
    namespace: str
    first: str  # commit ids
    second: str
    drift_trace: str  # the trace id of the drift repair on real-1
    status: dict[str, Any]  # fleet's status document after the repair


def rolled_out(sha: str) -> Any:
    def check(doc: dict[str, Any]) -> bool:
        cs = doc.get("clusters") or {}
        rollouts = (doc.get("rollouts") or {}).values()
        return (
            set(cs) == set(BOTH)
            and all(c["state"] == "Synced" and c["revision"] == sha for c in cs.values())
            and all(r["state"] == "Completed" for r in rollouts if r["revision"] == sha)
        )

    return check


def run(plane: kube.ControlPlane, jaeger: kube.Jaeger, workdir: Path) -> Traced:
    suffix = uuid.uuid4().hex[:6]
    instance, ns = f"t{suffix}", f"traced-{suffix}"
    repo = GitOpsRepo(workdir / "repo")
    for c in BOTH:
        repo.cluster(c)
    repo.bundle("base", [configmap("base")], namespace=ns, selector={})
    web = [deployment("web:1"), configmap("web", version="1"), configmap("old")]
    repo.bundle("web", web, namespace=ns, selector={}, rollout=CANARY_FIRST)
    first = repo.commit("first")
    with serve.serving(
        repo=repo.root,
        kubeconfig=plane.kubeconfig(BOTH),
        state_dir=workdir / "state",
        log=workdir / "serve.log",
        args=["--interval", "1s", "--instance", instance, "--otlp-endpoint", jaeger.otlp_url],
        env={"OTEL_SDK_DISABLED": "false", "OTEL_BSP_SCHEDULE_DELAY": "100"},
    ) as fleet:
        fleet.wait_for(rolled_out(first), timeout=90, what="the first commit rolled out")
        web = [deployment("web:2"), configmap("web", version="2")]
        repo.bundle("web", web, namespace=ns, selector={}, rollout=CANARY_FIRST)
        second = repo.commit("web 2, old removed")
        fleet.wait_for(rolled_out(second), timeout=90, what="the second commit rolled out")
        fleet.wait_for(
            lambda d: all(d["clusters"][c]["watch"]["streams"] >= 1 for c in BOTH), what="watches open"
        )
        before = fleet.status()["clusters"]["real-1"]["traceId"]
        real.kubectl(
            plane,
            "real-1",
            "-n",
            ns,
            "edit",
            "configmap",
            "web",
            env={"KUBE_EDITOR": "sed -i s/version:\\ .2./version:\\ edited/"},
        )
        status = fleet.wait_for(
            lambda d: d["clusters"]["real-1"]["traceId"] not in (None, before),
            timeout=30,
            what="a drift repair's trace on real-1",
        )
        if real.objects(plane, "real-1", ns)["web"]["data"] != {"version": "2"}:
            raise AssertionError("the kubectl edit was not repaired")
        code = fleet.terminate()  # a clean stop flushes the spans still queued
        if code != 0:
            raise AssertionError(f"fleet serve exited {code}:\n{fleet.logs()[-4000:]}")
    return Traced(instance, ns, first, second, status["clusters"]["real-1"]["traceId"], status)
