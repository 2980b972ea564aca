"""The kube layer against `fleet sim` over HTTP: kubeconfig cutting, discovery, retries, error mapping."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from fleet.clients import kube
from fleet.clients.kube import answers, transport
from fleet.cluster import apply
from fleet.core import errors, model
from fleet.sim import testing
from tests.support import faultproxy


@pytest.fixture(scope="module")
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["one", "two"]) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _clean_faults(sim: testing.SimHandle) -> Iterator[None]:
    yield
    for name in sim.names:
        sim.clear_faults_sync(name)


FAST = kube.Settings(request_timeout=2.0, connect_timeout=1.0, retry_budget=3.0, backoff_base=0.05)


def run(fn: Any) -> Any:
    return anyio.run(fn)


def client_for(sim: testing.SimHandle, name: str, settings: kube.Settings = FAST) -> kube.Client:
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    return kube.Client(cluster=name, context=kc.context(name), settings=settings)


def journal_since(sim: testing.SimHandle, name: str, since: int) -> list[dict[str, Any]]:
    return sim.journal_sync(name, since=since)


def seq(sim: testing.SimHandle, name: str) -> int:
    j = sim.journal_sync(name)
    return j[-1]["seq"] if j else 0


def kubeconfig_doc(
    users: list[dict[str, Any]], *, server: str = "https://example.invalid:6443"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c1", "cluster": {"server": server, "certificate-authority": "certs/ca.pem"}},
            {"name": "c2", "cluster": {"server": server, "insecure-skip-tls-verify": True}},
        ],
        "users": users,
        "contexts": [
            {"name": "first", "context": {"cluster": "c1", "user": "u1"}},
            {"name": "second", "context": {"cluster": "c2", "user": "u2"}},
        ],
        "current-context": "first",
    }


def test_each_context_gets_a_kubeconfig_holding_only_its_own_cluster_and_user(tmp_path: Path) -> None:
    doc = kubeconfig_doc(
        [{"name": "u1", "user": {"token": "token-one"}}, {"name": "u2", "user": {"token": "token-two"}}]
    )
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(doc))
    kc = kube.parse_kubeconfig([(str(path), path.read_bytes())])
    first = kc.context("first")
    assert first.error is None
    assert "token-two" not in repr(first.config) and "token-one" in repr(first.config)
    assert [u["name"] for u in first.config["users"]] == ["u1"]
    assert first.config["clusters"][0]["cluster"]["certificate-authority"] == str(tmp_path / "certs/ca.pem")
    assert "token-one" not in repr(first)  # credentials stay out of repr
    second = kc.context("second")
    assert second.warnings and "insecure-skip-tls-verify" in second.warnings[0]
    assert kc.context("missing").error == "context 'missing' not found in the kubeconfig"
    with_userinfo = kube.Context(name="x", server="https://admin:hunter2@example.invalid:6443")
    assert "hunter2" not in repr(kube.Client(cluster="x", context=with_userinfo, settings=FAST))


def test_exec_and_auth_provider_users_are_refused_without_allow_exec_auth_and_nothing_runs(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    doc = kubeconfig_doc(
        [
            {
                "name": "u1",
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "command": "sh",
                        "args": ["-c", f"touch {marker}"],
                    }
                },
            },
            {"name": "u2", "user": {"auth-provider": {"name": "oidc", "config": {"id-token": "x"}}}},
        ]
    )
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(doc))
    kc = kube.parse_kubeconfig([(str(path), path.read_bytes())])
    assert "exec plugin" in (kc.context("first").error or "") and "--allow-exec-auth" in (
        kc.context("first").error or ""
    )
    assert "auth-provider" in (kc.context("second").error or "")
    client = kube.Client(cluster="first", context=kc.context("first"), settings=FAST)

    async def main() -> None:
        with pytest.raises(errors.ClusterError, match="allow-exec-auth"):
            await client.types()

    run(main)
    assert not marker.exists()
    allowed = kube.parse_kubeconfig([(str(path), path.read_bytes())], allow_exec_auth=True)
    assert allowed.context("first").error is None


def test_the_kubeconfig_environment_variable_is_never_read_behind_our_back(
    sim: testing.SimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoy = tmp_path / "decoy"
    decoy.write_text(
        yaml.safe_dump(
            kubeconfig_doc([{"name": "u1", "user": {"token": "decoy"}}], server="http://127.0.0.1:9")
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(decoy))
    client = client_for(sim, "one")
    before = seq(sim, "one")

    async def main() -> None:
        types = await client.types()
        assert types.lookup("v1", "ConfigMap") is not None
        await client.aclose()

    run(main)
    assert journal_since(sim, "one", before)  # the requests went to the simulated cluster, not the decoy


def test_discovery_builds_a_type_table_once_per_cluster(sim: testing.SimHandle) -> None:
    client = client_for(sim, "one")
    before = seq(sim, "one")

    async def main() -> None:
        types = await client.types()
        cm = types.lookup("v1", "ConfigMap")
        ns = types.lookup("v1", "Namespace")
        dep = types.lookup("apps/v1", "Deployment")
        assert cm is not None and cm.namespaced and cm.plural == "configmaps"
        assert ns is not None and not ns.namespaced
        assert dep is not None and dep.collection_path("web") == "/apis/apps/v1/namespaces/web/deployments"
        await client.types()
        await client.aclose()

    run(main)
    paths = [r["path"].rstrip("/") for r in journal_since(sim, "one", before)]
    assert paths == ["/api", "/apis"]  # aggregated discovery: two requests, then cached


def test_every_request_carries_the_user_agent_its_settings_name(sim: testing.SimHandle) -> None:
    client = client_for(sim, "one", kube.with_settings(FAST, user_agent="fleet/0.1.0 (replica a-7f3k2)"))
    before = seq(sim, "one")

    async def main() -> None:
        await client.request("GET", "/api/v1/namespaces", what="namespaces")
        await client.request(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            what="ConfigMap/default/ua",
            body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ua"}},
            accept=(409,),
        )
        await client.aclose()

    run(main)
    agents = {r["userAgent"] for r in journal_since(sim, "one", before)}
    assert agents == {"fleet/0.1.0 (replica a-7f3k2)"}


def test_a_cookie_a_server_sets_is_never_sent_back_to_it(sim: testing.SimHandle) -> None:
    # As kubectl: a cluster's client keeps no cookies (a session cookie of a proxy in front of one API
    # server is never replayed, and costs nothing per request).
    with faultproxy.serving(sim.kubeconfig_dict, clusters=["one"]) as proxy:
        proxy.add(faultproxy.Rule(method="GET", set_headers={"Set-Cookie": "session=s3cr3t; Path=/"}))
        kc = kube.parse_kubeconfig([(str(proxy.kubeconfig), proxy.kubeconfig.read_bytes())])
        client = kube.Client(cluster="one", context=kc.context("one"), settings=FAST)

        async def main() -> None:
            for _ in range(3):
                await client.get(apply.CONFIGMAP, namespace="default", name="nothing-here")
            await client.aclose()

        run(main)
        assert len(proxy.hits) == 3
        assert [h.cookie for h in proxy.hits] == [None, None, None]


def test_a_context_with_a_proxy_url_is_reached_through_that_proxy(sim: testing.SimHandle) -> None:
    with faultproxy.serving(sim.kubeconfig_dict, clusters=["one"]) as proxy:
        doc = yaml.safe_load(sim.kubeconfig.read_text())
        forward = yaml.safe_load(proxy.kubeconfig.read_text())
        proxy_url = next(c for c in forward["clusters"] if c["name"] == "one")["cluster"]["server"]
        for c in doc["clusters"]:
            c["cluster"]["proxy-url"] = proxy_url.split("/clusters/")[0]
        kc = kube.parse_kubeconfig([("proxied.yaml", yaml.safe_dump(doc).encode())])
        client = kube.Client(cluster="one", context=kc.context("one"), settings=FAST)

        async def main() -> None:
            assert await client.get(apply.CONFIGMAP, namespace="default", name="nothing-here") is None
            await client.aclose()

        run(main)
        assert [(h.method, h.path) for h in proxy.hits] == [
            ("GET", "/api/v1/namespaces/default/configmaps/nothing-here")
        ]


def test_an_integer_beyond_64_bits_is_read_and_sent_as_json_not_refused() -> None:
    big = 2**70
    assert answers.parse(b'{"spec":{"n":%d}}' % big) == (True, {"spec": {"n": big}})
    assert transport.encode({"spec": {"n": big}}) == b'{"spec":{"n":%d}}' % big
    assert (
        transport.encode({"a": "é", "b": [1, 2.5, None, True]}) == '{"a":"é","b":[1,2.5,null,true]}'.encode()
    )
    assert answers.parse(b"<html>") == (False, None)


def test_retriable_errors_are_retried_and_permanent_ones_are_not(sim: testing.SimHandle) -> None:
    client = client_for(sim, "two")

    async def main() -> None:
        await client.types()
        await sim.faults("two", {"status": 503, "method": "GET", "path": "configmaps", "count": 2})
        before = seq(sim, "two")
        await client.list(apply.CONFIGMAP, namespace="default")
        gets = [r["status"] for r in journal_since(sim, "two", before)]
        assert gets == [503, 503, 200]

        await sim.clear_faults("two")
        await sim.faults("two", {"status": 403, "method": "GET", "path": "configmaps"})
        before = seq(sim, "two")
        with pytest.raises(errors.Rejected, match="cluster two: list configmaps in default"):
            await client.list(apply.CONFIGMAP, namespace="default")
        assert [r["status"] for r in journal_since(sim, "two", before)] == [403]
        await sim.clear_faults("two")

        before = seq(sim, "two")
        bogus = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": "default"},
            "bogus": 1,
        }
        with pytest.raises(errors.ClusterError, match="ConfigMap/default/x") as caught:
            await client.apply(apply.CONFIGMAP, bogus, force=True)
        assert not caught.value.retriable
        assert len(journal_since(sim, "two", before)) == 1
        await client.aclose()

    run(main)


def test_retry_after_is_honoured(sim: testing.SimHandle) -> None:
    client = client_for(sim, "two")

    async def main() -> float:
        await client.types()
        await sim.faults(
            "two", {"status": 429, "retryAfter": 1, "method": "GET", "path": "secrets", "count": 1}
        )
        started = time.monotonic()
        await client.list(kube.ResourceType("", "v1", "Secret", "secrets", True), namespace="default")
        await client.aclose()
        return time.monotonic() - started

    assert run(main) >= 1.0


def test_an_unreachable_cluster_is_given_up_within_its_budget_and_then_fails_fast(
    sim: testing.SimHandle,
) -> None:
    settings = kube.Settings(request_timeout=0.5, connect_timeout=0.5, retry_budget=1.5, backoff_base=0.05)
    client = client_for(sim, "one", settings)
    sim.faults_sync("one", {"hang": True})

    async def main() -> None:
        with pytest.raises(errors.Unreachable, match="cluster one unreachable"):
            await client.types()
        before = seq(sim, "one")
        with pytest.raises(errors.Unreachable):
            await client.list(apply.CONFIGMAP)
        assert journal_since(sim, "one", before) == []
        await client.aclose()

    run(main)


def test_a_conflict_is_mapped_to_a_conflict_error_naming_the_object(sim: testing.SimHandle) -> None:
    client = client_for(sim, "two")
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "shared", "namespace": "default"},
        "data": {"k": "a"},
    }

    async def main() -> None:
        status, _ = await client.request(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/shared",
            what="setup",
            params={"fieldManager": "someone-else"},
            body=body,
            content_type=kube.APPLY_CONTENT_TYPE,
        )
        assert status in (200, 201)
        with pytest.raises(errors.Conflict, match="ConfigMap/default/shared"):
            await client.apply(apply.CONFIGMAP, {**body, "data": {"k": "b"}}, force=False)
        obj, created = await client.apply(apply.CONFIGMAP, {**body, "data": {"k": "b"}}, force=True)
        assert not created and obj["data"] == {"k": "b"}
        await client.aclose()

    run(main)


def test_secret_values_are_scrubbed_from_messages() -> None:
    message = 'Secret "s" is invalid: data[pw]: Invalid value: "hunter2-canary" (aHVudGVyMi1jYW5hcnk=)'
    out = kube.scrub(message, ["hunter2-canary"])
    assert "hunter2" not in out and "aHVudGVyMi1jYW5hcnk=" not in out
    assert out.startswith('Secret "s" is invalid')


def test_requests_are_rate_limited_per_cluster() -> None:
    bucket = kube.transport._TokenBucket(qps=20, burst=2)

    async def main() -> float:
        started = time.monotonic()
        for _ in range(6):
            await bucket.take()
        return time.monotonic() - started

    assert run(main) >= 0.15  # 2 from the burst, then 4 at 20/s


def test_resource_types_are_read_from_discovery_documents() -> None:
    doc = {
        "groupVersion": "apps/v1",
        "resources": [
            {"name": "deployments", "kind": "Deployment", "namespaced": True, "verbs": ["list", "patch"]},
            {"name": "deployments/status", "kind": "Deployment", "namespaced": True, "verbs": ["get"]},
        ],
    }
    (rt,) = kube.types_from_resource_list(doc)
    assert rt == kube.ResourceType("apps", "v1", "Deployment", "deployments", True, ("list", "patch"))
    assert rt.object_path("web", "api") == "/apis/apps/v1/namespaces/web/deployments/api"
    assert model.ObjectRef("apps", "v1", "Deployment", "web", "api").api_version == rt.api_version


def test_a_tls_cluster_is_reached_with_the_ca_from_the_kubeconfig() -> None:
    with testing.serving(names=["secure"], tls=True) as tls_sim:
        doc = yaml.safe_load(tls_sim.kubeconfig.read_text())
        assert doc["clusters"][0]["cluster"]["server"].startswith("https://")
        client = client_for(tls_sim, "secure")

        async def main() -> None:
            types = await client.types()
            assert types.lookup("v1", "ConfigMap") is not None
            await client.aclose()

        run(main)


@pytest.mark.slow  # starts processes: an exec credential plugin
def test_an_exec_plugin_runs_only_when_allowed(sim: testing.SimHandle, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    credential = (
        '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t0k"}}'
    )
    doc = yaml.safe_load(sim.kubeconfig.read_text())
    for user in doc["users"]:
        user["user"] = {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": "sh",
                "args": ["-c", f"touch {marker}; echo '{credential}'"],
            }
        }
    path = tmp_path / "exec-config"
    path.write_text(yaml.safe_dump(doc))
    refused = kube.parse_kubeconfig([(str(path), path.read_bytes())])
    allowed = kube.parse_kubeconfig([(str(path), path.read_bytes())], allow_exec_auth=True)

    async def main() -> None:
        with pytest.raises(errors.ClusterError, match="allow-exec-auth"):
            await kube.Client(cluster="one", context=refused.context("one"), settings=FAST).types()
        assert not marker.exists()
        client = kube.Client(cluster="one", context=allowed.context("one"), settings=FAST)
        assert (await client.types()).lookup("v1", "ConfigMap") is not None
        await client.aclose()

    run(main)
    assert marker.exists()


def test_over_tls_reads_use_lean_buffers_and_large_objects_and_watch_events_arrive_whole() -> None:
    import asyncio.sslproto

    from fleet.clients import tls

    big = "x" * 700_000  # far larger than one TLS record: many reads through the 16 KiB buffer
    with testing.serving(names=["secure"], tls=True) as tls_sim:
        client = client_for(tls_sim, "secure")

        async def main() -> None:
            types = await client.types()
            cm_type = types.lookup("v1", "ConfigMap")
            assert cm_type is not None
            obj = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "big", "namespace": "default"},
                "data": {"blob": big},
            }
            await client.apply(cm_type, obj, force=True)
            got = await client.get(cm_type, namespace="default", name="big")
            assert got is not None and got["data"]["blob"] == big
            params = {"watch": "true", "fieldSelector": "metadata.name=big", "timeoutSeconds": "5"}
            path = cm_type.collection_path("default")
            async with client.stream(path, what="watch", params=params, read_timeout=10) as stream:
                assert stream.status == 200
                async for line in stream.lines():
                    event = json.loads(line)
                    assert event["type"] == "ADDED" and event["object"]["data"]["blob"] == big
                    break
            await client.aclose()

        run(main)
    assert asyncio.sslproto.SSLProtocol.max_size == tls.READ_BUFFER


def test_a_write_is_asked_of_may_write_right_before_each_attempt_and_a_retry_after_it_said_no_is_not_sent(
    sim: testing.SimHandle,
) -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "fenced", "namespace": "default"},
        "data": {"v": "1"},
    }
    sim.faults_sync("two", {"status": 503, "method": "PATCH", "path": "configmaps/fenced", "count": 1})
    start = seq(sim, "two")
    answers_ = iter([True, False])  # the first attempt is sent (503), the retry after its backoff is not

    async def main() -> None:
        client = client_for(sim, "two")
        client.may_write = lambda: next(answers_)
        try:
            with pytest.raises(kube.NotOwner, match="not sent: this replica may not write to cluster two"):
                await client.apply(apply.CONFIGMAP, obj, force=True)
            assert await client.get(apply.CONFIGMAP, namespace="default", name="fenced") is None  # reads go
        finally:
            await client.aclose()

    run(main)
    sent = [(e["method"], e["status"]) for e in journal_since(sim, "two", start)]
    assert sent == [("PATCH", 503), ("GET", 404)], sent
