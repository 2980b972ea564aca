"""`ClusterWatch` against `fleet sim` over HTTP, with the real kubectl making the edits "by someone else".

Each test gets its own simulated cluster (faults and compaction stay local to it), applies the objects
the way a full reconcile does (`plan.marked`, server-side apply as `fleet`), runs a `ClusterWatch` with
short timeouts, changes something with kubectl, and checks the cluster and the sim's request journal.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from fleet.clients import kube
from fleet.cluster import apply, watch
from fleet.core import drift, model, plan
from fleet.sim import testing
from fleet.sim.storage import store

INSTANCE = "fleet"
NS = "app"
CANARY = "canary-s3cr3t-value-7731"
KUBECTL = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl")
NAMES = [f"w{i}" for i in range(1, 17)]

FAST_KUBE = kube.Settings(request_timeout=5.0, connect_timeout=2.0, retry_budget=5.0, backoff_base=0.05)
FAST_WATCH = watch.Settings(
    timeout_seconds=3,
    read_margin=1.5,
    backoff_base=0.1,
    backoff_cap=1.0,
    coalesce=0.05,
    health_interval=0.05,
)


@pytest.fixture(scope="module")
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=NAMES, settings=store.Settings(bookmark_interval=1.0, rv_wait=0.5)) as h:
        yield h


@pytest.fixture(scope="module")
def free(sim: testing.SimHandle) -> Iterator[Iterator[str]]:
    yield iter(sim.names)


@pytest.fixture
def cluster(sim: testing.SimHandle, free: Iterator[str]) -> Iterator[str]:
    """A simulated cluster no other test of this module touches."""
    name = next(free)
    yield name
    sim.clear_faults_sync(name)


def manifests(*, mode: str = "safe") -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "app-config", "namespace": NS},
            "data": {"mode": mode, "level": "3"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "app-secret", "namespace": NS},
            "stringData": {"token": CANARY},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS, "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}
                        ]
                    },
                },
            },
        },
    ]


def desired_of(cluster: str, objects: list[dict[str, Any]]) -> dict[model.ObjectRef, Mapping[str, Any]]:
    target = plan.Target("web", desired=model.DesiredSet("web", cluster, tuple(objects), "h"))
    return drift.desired_objects({"web": target}, instance=INSTANCE)


def client_for(sim: testing.SimHandle, name: str) -> kube.Client:
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    return kube.Client(cluster=name, context=kc.context(name), settings=FAST_KUBE)


async def wait_for(check: Callable[[], Any], *, within: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.02)


async def kubectl(sim: testing.SimHandle, cluster: str, cache: Path, *args: str) -> str:
    cmd = [KUBECTL, "--kubeconfig", str(sim.kubeconfig), "--context", cluster, "--cache-dir", str(cache)]
    result = await anyio.run_process([*cmd, "-n", NS, *args], check=False)
    if result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.decode()}")
    return result.stdout.decode()


def get(sim: testing.SimHandle, cluster: str, path: str) -> dict[str, Any] | None:
    with httpx.Client(timeout=5) as c:
        resp = c.get(sim.url(cluster) + path)
        return resp.json() if resp.status_code == 200 else None


def config(sim: testing.SimHandle, cluster: str) -> dict[str, Any] | None:
    return get(sim, cluster, f"/api/v1/namespaces/{NS}/configmaps/app-config")


def fleet_writes(journal: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        r for r in journal if r["method"] in ("PATCH", "POST", "PUT") and "fieldManager=fleet" in r["query"]
    ]


def seq(sim: testing.SimHandle, cluster: str) -> int:
    j = sim.journal_sync(cluster)
    return j[-1]["seq"] if j else 0


@contextlib.asynccontextmanager
async def watching(
    sim: testing.SimHandle,
    cluster: str,
    *,
    settings: watch.Settings = FAST_WATCH,
    desired: dict[model.ObjectRef, Mapping[str, Any]] | None = None,
    holder: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[watch.ClusterWatch, list[watch.RepairBatch], list[dict[str, Any]]]]:
    """Apply the objects as a full reconcile would, then run a ClusterWatch over them."""
    client = client_for(sim, cluster)
    state = holder if holder is not None else {}
    state.setdefault("desired", desired or desired_of(cluster, manifests()))
    await client.create(apply.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    types = await client.types()
    for ref, obj in state["desired"].items():
        rt = apply.resolve(types, ref)
        assert rt is not None
        await client.apply(rt, obj, force=True)
    batches: list[watch.RepairBatch] = []
    reports: list[dict[str, Any]] = []

    def on_health(name: str, **fields: Any) -> None:
        assert name == cluster
        reports.append(fields)

    w = watch.ClusterWatch(
        client,
        instance=INSTANCE,
        desired=lambda: state["desired"],
        settings=settings,
        on_health=on_health,
        on_repair=batches.append,
        kinds=drift.kinds(state["desired"]),
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            await wait_for(lambda: w.health.streams == len(w.kinds), what="streams open")
            yield w, batches, reports
            tg.cancel_scope.cancel()
    finally:
        await client.aclose()


@pytest.mark.slow  # starts processes: kubectl
def test_a_field_edited_with_kubectl_is_restored_by_a_targeted_apply(
    sim: testing.SimHandle, cluster: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with watching(sim, cluster) as (w, batches, _):
            start = seq(sim, cluster)
            await kubectl(
                sim,
                cluster,
                tmp_path,
                "patch",
                "configmap",
                "app-config",
                "--type",
                "merge",
                "-p",
                '{"data":{"mode":"unsafe"}}',
            )
            await wait_for(
                lambda: (config(sim, cluster) or {}).get("data", {}).get("mode") == "safe",
                what="restored value",
            )
            await wait_for(lambda: batches, what="repair report")
            writes = fleet_writes(sim.journal_sync(cluster, since=start))
            assert [r["path"] for r in writes] == [f"/api/v1/namespaces/{NS}/configmaps/app-config"]
            assert "force=true" in writes[0]["query"]
            assert batches[0].refs == (model.ObjectRef("", "v1", "ConfigMap", NS, "app-config"),)
            assert batches[0].changes.count(model.Action.CONFIGURED) == 1
            assert w.repairs == 1

    anyio.run(main)


@pytest.mark.slow  # starts processes: kubectl
def test_a_container_image_changed_with_kubectl_set_image_is_restored(
    sim: testing.SimHandle, cluster: str, tmp_path: Path
) -> None:
    def image() -> str:
        deploy = get(sim, cluster, f"/apis/apps/v1/namespaces/{NS}/deployments/web") or {}
        return str(deploy["spec"]["template"]["spec"]["containers"][0]["image"])

    async def main() -> None:
        async with watching(sim, cluster) as (w, _batches, _):
            await kubectl(sim, cluster, tmp_path, "set", "image", "deployment/web", "web=nginx:9.9")
            await wait_for(lambda: w.repairs == 1, what="one repair")
            await wait_for(lambda: image() == "nginx:1.27", what="image restored")

    anyio.run(main)


@pytest.mark.slow  # starts processes: kubectl
def test_a_managed_object_deleted_with_kubectl_is_recreated(
    sim: testing.SimHandle, cluster: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with watching(sim, cluster) as (_w, batches, _):
            before = config(sim, cluster)
            assert before is not None
            await kubectl(sim, cluster, tmp_path, "delete", "configmap", "app-config")
            after = await wait_for(lambda: config(sim, cluster), what="recreated object")
            assert after["metadata"]["uid"] != before["metadata"]["uid"]
            assert after["data"] == {"mode": "safe", "level": "3"}
            assert after["metadata"]["labels"][model.LABEL_OWNER] == INSTANCE
            await wait_for(lambda: batches, what="repair report")
            assert batches[0].changes.count(model.Action.CREATED) == 1

    anyio.run(main)


@pytest.mark.slow  # starts processes: kubectl
def test_a_label_added_by_someone_else_is_left_alone_and_nothing_is_written(
    sim: testing.SimHandle, cluster: str, tmp_path: Path
) -> None:
    """Also: server defaults (Deployment), a Secret's stringData read back as data, and workload status
    updates are not drift: the watch writes nothing at all."""

    async def main() -> None:
        start = seq(sim, cluster)
        async with watching(sim, cluster) as (w, batches, _):
            seen = w.events
            await kubectl(sim, cluster, tmp_path, "label", "configmap", "app-config", "team=payments")
            await kubectl(sim, cluster, tmp_path, "annotate", "deployment", "web", "owner=someone")
            await wait_for(lambda: w.events >= seen + 2, what="the two events")
            await anyio.sleep(0.5)
            assert batches == [] and w.repairs == 0
            after_apply = [r for r in sim.journal_sync(cluster, since=start) if r["method"] == "GET"]
            assert after_apply  # the watch did read
            journal = sim.journal_sync(cluster, since=start)
            first_watch = min(r["seq"] for r in journal if "watch=true" in r["query"])
            assert fleet_writes([r for r in journal if r["seq"] > first_watch]) == []
        labels = (config(sim, cluster) or {})["metadata"]["labels"]
        assert labels["team"] == "payments"

    anyio.run(main)


@pytest.mark.slow  # starts processes: kubectl
def test_a_new_revision_is_picked_up_without_restarting_streams(
    sim: testing.SimHandle, cluster: str, tmp_path: Path
) -> None:
    async def main() -> None:
        holder: dict[str, Any] = {}
        async with watching(sim, cluster, holder=holder) as (w, _batches, _):
            opened = [r for r in sim.journal_sync(cluster) if "watch=true" in r["query"]]
            holder["desired"] = desired_of(cluster, manifests(mode="strict"))
            await kubectl(
                sim,
                cluster,
                tmp_path,
                "patch",
                "configmap",
                "app-config",
                "--type",
                "merge",
                "-p",
                '{"data":{"level":"9"}}',
            )
            await wait_for(
                lambda: (config(sim, cluster) or {}).get("data") == {"mode": "strict", "level": "3"},
                what="the new revision's values",
            )
            assert [r for r in sim.journal_sync(cluster) if "watch=true" in r["query"]] == opened
            assert w.health.reconnects == 0

    anyio.run(main)


@pytest.mark.slow  # starts processes: kubectl
def test_after_compaction_the_loop_relists_once_and_misses_no_change(
    sim: testing.SimHandle, cluster: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with watching(sim, cluster) as (w, _batches, _):
            await sim.faults(cluster, {"dropWatches": True})  # streams close, reopened ones close at once
            await wait_for(lambda: w.health.streams == 0 or w.health.reconnects > 0, what="streams dropped")
            await kubectl(
                sim,
                cluster,
                tmp_path,
                "patch",
                "configmap",
                "app-config",
                "--type",
                "merge",
                "-p",
                '{"data":{"mode":"unsafe"}}',
            )
            await kubectl(sim, cluster, tmp_path, "delete", "secret", "app-secret")
            await sim.compact(cluster)
            start = seq(sim, cluster)
            await sim.clear_faults(cluster)
            await wait_for(
                lambda: (config(sim, cluster) or {}).get("data", {}).get("mode") == "safe",
                what="the edit made while disconnected is repaired",
            )
            secret = await wait_for(
                lambda: get(sim, cluster, f"/api/v1/namespaces/{NS}/secrets/app-secret"),
                what="the deletion made while disconnected is repaired",
            )
            assert base64.b64decode(secret["data"]["token"]).decode() == CANARY
            await wait_for(lambda: w.health.streams == 3, what="streams reopened")
            journal = sim.journal_sync(cluster, since=start)
            lists = [
                r
                for r in journal
                if r["method"] == "GET" and "watch=true" not in r["query"] and "labelSelector" in r["query"]
            ]
            by_kind = sorted(r["path"].rsplit("/", 1)[-1] for r in lists)
            assert by_kind == ["configmaps", "deployments", "secrets"]  # one relist per kind, no more
            assert w.health.relists == 3

    anyio.run(main)


@pytest.mark.slow  # starts processes: kubectl
def test_a_dropped_stream_resumes_from_its_resource_version_without_a_relist(
    sim: testing.SimHandle, cluster: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with watching(sim, cluster) as (w, _batches, reports):
            start = seq(sim, cluster)
            await sim.faults(cluster, {"dropWatches": True, "count": 0})  # closes the open ones only
            await wait_for(lambda: w.health.reconnects >= 3 and w.health.streams == 3, what="reopened")
            await kubectl(
                sim,
                cluster,
                tmp_path,
                "patch",
                "configmap",
                "app-config",
                "--type",
                "merge",
                "-p",
                '{"data":{"mode":"unsafe"}}',
            )
            await wait_for(
                lambda: (config(sim, cluster) or {}).get("data", {}).get("mode") == "safe", what="restored"
            )
            journal = sim.journal_sync(cluster, since=start)
            watches = [r for r in journal if "watch=true" in r["query"]]
            assert watches and all("resourceVersion=" in r["query"] for r in watches)
            assert w.health.relists == 0
            assert not [
                r
                for r in journal
                if r["method"] == "GET" and "watch=true" not in r["query"] and "labelSelector" in r["query"]
            ]
            await wait_for(lambda: reports and reports[-1]["reconnects"] >= 3, what="health reported")
            assert reports[-1]["streams"] == 3
            assert reports[-1]["last_event_at"].endswith("Z")

    anyio.run(main)


@pytest.mark.slow  # starts processes: kubectl
def test_a_hung_watch_request_is_given_up_and_reopened(
    sim: testing.SimHandle, cluster: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with watching(sim, cluster) as (w, _batches, _):
            await sim.faults(cluster, {"hang": True, "watch": True, "count": 3})  # the next 3 watches hang
            await sim.faults(cluster, {"dropWatches": True, "count": 0})
            await wait_for(lambda: w.health.streams == 0, what="streams closed")
            await kubectl(
                sim,
                cluster,
                tmp_path,
                "patch",
                "configmap",
                "app-config",
                "--type",
                "merge",
                "-p",
                '{"data":{"mode":"unsafe"}}',
            )
            started = time.monotonic()
            await wait_for(
                lambda: (config(sim, cluster) or {}).get("data", {}).get("mode") == "safe",
                within=30,
                what="restored after the hung watches were given up",
            )
            assert time.monotonic() - started >= 1.0  # it did wait for the read timeout
            await wait_for(lambda: w.health.streams == 3, what="streams reopened")
            assert w.health.reconnects >= 6  # 3 dropped + 3 given up

    anyio.run(main)


@pytest.mark.slow  # seconds: a fight with another writer, then its backoff
def test_a_fight_with_another_writer_backs_off_and_is_reported(
    sim: testing.SimHandle, cluster: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = watch.Settings(
        timeout_seconds=3,
        read_margin=1.5,
        backoff_base=0.1,
        coalesce=0.05,
        fight_limit=3,
        fight_window=30.0,
        fight_backoff=60.0,
    )

    async def main() -> None:
        async with watching(sim, cluster, settings=settings) as (w, batches, _):
            start = seq(sim, cluster)
            url = f"{sim.url(cluster)}/api/v1/namespaces/{NS}/configmaps/app-config"
            fought = 0
            async with httpx.AsyncClient(timeout=5) as rival:
                deadline = time.monotonic() + 3.0
                while time.monotonic() < deadline:
                    current = (await rival.get(url)).json()
                    if current["data"]["mode"] != "rival":
                        fought += 1
                        await rival.patch(
                            url,
                            params={"fieldManager": "rival-controller"},
                            headers={"Content-Type": "application/merge-patch+json"},
                            content=b'{"data":{"mode":"rival"}}',
                        )
                    await anyio.sleep(0.05)
            repairs = fleet_writes(sim.journal_sync(cluster, since=start))
            assert len(repairs) == settings.fight_limit + 1  # then it backed off for a minute
            assert fought == len(repairs) + 1
            fights = w.active_fights()
            assert [f.ref.name for f in fights] == ["app-config"]
            assert "rival-controller" in fights[0].message and "60s" in fights[0].message
            assert w.guard.fights == 1
            assert any(b.fights for b in batches)

    with caplog.at_level(logging.INFO, logger="fleet"):
        anyio.run(main)
    assert "backs off" in caplog.text


def test_kinds_are_watched_and_unwatched_as_set_kinds_changes(sim: testing.SimHandle, cluster: str) -> None:
    async def main() -> None:
        async with watching(sim, cluster) as (w, _batches, _):
            w.set_kinds({("v1", "ConfigMap")})
            await wait_for(lambda: w.health.streams == 1, what="two streams stopped")
            start = seq(sim, cluster)
            w.set_kinds({("v1", "ConfigMap"), ("v1", "Service")})
            await wait_for(lambda: w.health.streams == 2, what="service stream started")
            opened = [r["path"] for r in sim.journal_sync(cluster, since=start) if "watch=true" in r["query"]]
            assert opened == ["/api/v1/services"]

    anyio.run(main)


@pytest.mark.slow  # starts processes: kubectl
def test_no_secret_value_reaches_logs_or_reports(
    sim: testing.SimHandle, cluster: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with watching(sim, cluster) as (w, batches, reports):
            await kubectl(
                sim,
                cluster,
                tmp_path,
                "patch",
                "secret",
                "app-secret",
                "--type",
                "merge",
                "-p",
                '{"data":{"token":"' + base64.b64encode(b"other").decode() + '"}}',
            )
            secret = lambda: get(sim, cluster, f"/api/v1/namespaces/{NS}/secrets/app-secret") or {}  # noqa: E731
            await wait_for(
                lambda: base64.b64decode(secret().get("data", {}).get("token", "")).decode() == CANARY,
                what="secret restored",
            )
            await wait_for(lambda: batches, what="repair report")
            text = repr(batches) + repr(reports) + repr(w.fights)
            assert CANARY not in text and base64.b64encode(CANARY.encode()).decode() not in text

    with caplog.at_level(logging.DEBUG):
        anyio.run(main)
    assert CANARY not in caplog.text


@pytest.mark.slow  # starts processes: kubectl
def test_an_object_relabelled_for_another_owner_is_reported_and_never_written(
    sim: testing.SimHandle, cluster: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with watching(sim, cluster) as (w, batches, _):
            start = seq(sim, cluster)
            await kubectl(
                sim,
                cluster,
                tmp_path,
                "label",
                "configmap",
                "app-config",
                "fleet.dev/owner=other",
                "--overwrite",
            )
            await wait_for(lambda: batches, what="repair report")
            change = batches[0].changes.changes[0]
            assert change.action is model.Action.CONFLICT
            assert "owned by fleet instance 'other'" in change.message
            assert fleet_writes(sim.journal_sync(cluster, since=start)) == []
            assert w.repairs == 0
        assert (config(sim, cluster) or {})["metadata"]["labels"][model.LABEL_OWNER] == "other"

    anyio.run(main)


@pytest.mark.slow  # starts processes: kubectl
def test_an_http_410_on_a_watch_request_relists_that_kind_once(
    sim: testing.SimHandle, cluster: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with watching(sim, cluster) as (w, _batches, _):
            await sim.faults(cluster, {"status": 410, "watch": True, "path": "/configmaps", "count": 1})
            start = seq(sim, cluster)
            await sim.faults(cluster, {"dropWatches": True, "count": 0})
            await wait_for(lambda: w.health.relists == 1 and w.health.streams == 3, what="relisted")
            lists = [
                r["path"]
                for r in sim.journal_sync(cluster, since=start)
                if r["method"] == "GET" and "watch=true" not in r["query"] and "labelSelector" in r["query"]
            ]
            assert lists == ["/api/v1/configmaps"]
            await kubectl(
                sim,
                cluster,
                tmp_path,
                "patch",
                "configmap",
                "app-config",
                "--type",
                "merge",
                "-p",
                '{"data":{"mode":"unsafe"}}',
            )
            await wait_for(
                lambda: (config(sim, cluster) or {}).get("data", {}).get("mode") == "safe", what="restored"
            )

    anyio.run(main)


def test_a_health_report_is_sent_only_when_what_it_says_changed(sim: testing.SimHandle, cluster: str) -> None:
    """Every event and every stream opened or closed wakes the reporter; a wake that changes nothing the
    report says (streams, the second of the last event, the counters) sends nothing."""

    async def main() -> None:
        async with watching(sim, cluster) as (w, _batches, reports):
            await wait_for(
                lambda: reports and reports[-1]["streams"] == len(w.kinds), what="streams reported"
            )
            for _ in range(10):
                w._touch()  # what an event, an open or a close does: the report may have changed
                await anyio.sleep(FAST_WATCH.health_interval * 2)
            assert reports[-1] == w.health.fields()
            repeated = [a for a, b in itertools.pairwise(reports) if a == b]
            assert repeated == []

    anyio.run(main)
