"""The kube client against answers a broken or hostile API server gives (docs/reliability.md).

fleet's real client talks to `fleet sim` through `tests.support.faultproxy`, which breaks successful
answers (HTML login pages, truncated JSON, wrong shapes, endless continue tokens, trickled and huge
bodies, odd Retry-After values). The rule under test: an unreadable answer is an error, never an empty
result; every request ends within its deadline; no wait outlives the retry budget.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from fleet.clients import kube
from fleet.cluster import apply
from fleet.core import errors
from fleet.sim import testing
from tests.support import faultproxy

NS = "default"
# Short budget and backoff (the defaults are 60 s and 0.2 s): the rules under test are the same, sooner.
FAST = kube.Settings(request_timeout=2.0, connect_timeout=1.0, retry_budget=2.0, backoff_base=0.01)


@pytest.fixture(scope="module")
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["one"]) as handle:
        yield handle


@pytest.fixture(scope="module")
def proxy(sim: testing.SimHandle) -> Iterator[faultproxy.FaultProxy]:
    with faultproxy.serving(sim.kubeconfig_dict) as p:
        yield p


@pytest.fixture(autouse=True)
def _clean(sim: testing.SimHandle, proxy: faultproxy.FaultProxy) -> Iterator[None]:
    yield
    proxy.clear()
    sim.clear_faults_sync("one")


def client_for(proxy: faultproxy.FaultProxy, settings: kube.Settings = FAST) -> kube.Client:
    kc = kube.parse_kubeconfig([(str(proxy.kubeconfig), proxy.kubeconfig.read_bytes())])
    return kube.Client(cluster="one", context=kc.context("one"), settings=settings)


def run(fn: Any, *, within: float = 30.0) -> Any:
    async def bounded() -> Any:
        with anyio.fail_after(within):  # the old code hung here: fail, do not hang the suite
            return await fn()

    return anyio.run(bounded)


CONFIGMAPS_LIST = r"/namespaces/default/configmaps$"
CONFIGMAP_ONE = r"/namespaces/default/configmaps/one$"

BROKEN_BODIES = {
    "html": {"status": 200, "headers": faultproxy.HTML, "body": faultproxy.HTML_LOGIN},
    "truncated": {"truncate": 30},
    "empty": {"status": 200, "headers": {"Content-Type": "application/json"}, "body": b""},
    "a JSON list": {"edit": faultproxy.replace_with([])},
    "a JSON string": {"edit": faultproxy.replace_with("ok")},
}


def ensure_configmap(client: kube.Client) -> Any:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "one", "namespace": NS}}
    return client.apply(apply.CONFIGMAP, body, force=True)


@pytest.mark.parametrize("broken", sorted(BROKEN_BODIES))
def test_a_list_answered_with_an_unreadable_body_is_an_error_and_never_empty(
    proxy: faultproxy.FaultProxy, broken: str
) -> None:
    client = client_for(proxy)

    async def main() -> None:
        await ensure_configmap(client)
        rule = proxy.add(faultproxy.Rule(method="GET", path=CONFIGMAPS_LIST, **BROKEN_BODIES[broken]))
        with pytest.raises(errors.ClusterError, match=r"cluster one: list configmaps in default: .*answer"):
            await client.list(apply.CONFIGMAP, namespace=NS)
        assert rule.fired >= 2  # retried like a transport fault before giving up
        await client.aclose()

    run(main)


@pytest.mark.parametrize(
    "edit",
    [
        faultproxy.drop_key("items"),
        faultproxy.replace_with({"kind": "ConfigMapList", "items": {"a": 1}}),
        faultproxy.replace_with({"kind": "ConfigMapList", "items": ["not an object"]}),
        faultproxy.replace_with({"kind": "ConfigMapList", "items": [{"metadata": "x"}]}),
        faultproxy.replace_with({"kind": "ConfigMapList", "metadata": [], "items": []}),
    ],
    ids=["no items", "items a mapping", "an item a string", "item metadata a string", "metadata a list"],
)
def test_a_list_answer_of_the_wrong_shape_is_an_error_and_never_empty(
    proxy: faultproxy.FaultProxy, edit: Any
) -> None:
    client = client_for(proxy)
    proxy.add(faultproxy.Rule(method="GET", path=CONFIGMAPS_LIST, edit=edit))

    async def main() -> None:
        with pytest.raises(errors.ClusterError, match="list configmaps in default: the answer"):
            await client.list(apply.CONFIGMAP, namespace=NS)
        await client.aclose()

    run(main)


@pytest.mark.parametrize("broken", sorted(BROKEN_BODIES))
def test_a_get_answered_with_an_unreadable_body_is_an_error_not_not_found(
    proxy: faultproxy.FaultProxy, broken: str
) -> None:
    client = client_for(proxy)

    async def main() -> None:
        await ensure_configmap(client)
        proxy.add(faultproxy.Rule(method="GET", path=CONFIGMAP_ONE, **BROKEN_BODIES[broken]))
        with pytest.raises(errors.ClusterError, match="ConfigMap/default/one: the answer"):
            await client.get(apply.CONFIGMAP, namespace=NS, name="one")
        await client.aclose()

    run(main)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_404_that_is_not_a_kubernetes_status_is_an_error_not_not_found(
    proxy: faultproxy.FaultProxy, method: str
) -> None:
    client = client_for(proxy)

    async def main() -> None:
        await ensure_configmap(client)
        proxy.add(faultproxy.Rule(method=method, path=CONFIGMAP_ONE, status=404, headers=faultproxy.HTML))
        with pytest.raises(
            errors.ClusterError, match=r"ConfigMap/default/one: the answer .* not a Kubernetes Status"
        ):
            if method == "GET":
                await client.get(apply.CONFIGMAP, namespace=NS, name="one")
            else:
                await client.delete(
                    apply.CONFIGMAP, namespace=NS, name="one", uid=None, resource_version=None
                )
        proxy.clear()
        assert await client.get(apply.CONFIGMAP, namespace=NS, name="one") is not None  # still there
        await client.aclose()

    run(main)


def test_a_real_not_found_is_still_not_found(proxy: faultproxy.FaultProxy) -> None:
    client = client_for(proxy)

    async def main() -> None:
        assert await client.get(apply.CONFIGMAP, namespace=NS, name="never-made") is None
        assert not await client.delete(
            apply.CONFIGMAP, namespace=NS, name="never-made", uid=None, resource_version=None
        )
        await client.aclose()

    run(main)


def test_an_apply_answered_with_html_is_an_error_not_an_unchanged_object(
    proxy: faultproxy.FaultProxy,
) -> None:
    client = client_for(proxy)
    proxy.add(faultproxy.Rule(method="PATCH", path=CONFIGMAP_ONE, **BROKEN_BODIES["html"]))

    async def main() -> None:
        with pytest.raises(errors.ClusterError, match="ConfigMap/default/one: the answer"):
            await ensure_configmap(client)
        await client.aclose()

    run(main)


@pytest.mark.parametrize("path", [r"^/api/?$", r"^/apis/?$"])
def test_discovery_answered_with_html_is_an_error_not_an_empty_type_table(
    proxy: faultproxy.FaultProxy, path: str
) -> None:
    client = client_for(proxy)
    proxy.add(faultproxy.Rule(method="GET", path=path, **BROKEN_BODIES["html"]))

    async def main() -> None:
        with pytest.raises(errors.ClusterError, match="cluster one: discovery: the answer"):
            await client.types()
        await client.aclose()

    run(main)


def test_a_group_version_answered_with_html_during_legacy_discovery_is_an_error(
    proxy: faultproxy.FaultProxy,
) -> None:
    client = client_for(proxy)
    # A server without aggregated discovery: fleet walks the group versions one by one.
    proxy.add(faultproxy.Rule(method="GET", path=r"^/apis?/?$", edit=_legacy))
    proxy.add(faultproxy.Rule(method="GET", path=r"^/apis/apps/v1/?$", **BROKEN_BODIES["html"]))

    async def main() -> None:
        with pytest.raises(errors.ClusterError, match="cluster one: discovery: the answer"):
            await client.types()
        await client.aclose()

    run(main)


def _legacy(doc: Any) -> Any:
    """An aggregated discovery document turned into the legacy APIVersions / APIGroupList."""
    if doc.get("kind") != "APIGroupDiscoveryList":
        return doc
    groups = [item["metadata"].get("name", "") for item in doc["items"]]
    if groups == [""]:
        return {"kind": "APIVersions", "versions": ["v1"]}
    out = []
    for item in doc["items"]:
        versions = [{"groupVersion": f"{item['metadata']['name']}/{v['version']}"} for v in item["versions"]]
        out.append({"name": item["metadata"]["name"], "versions": versions})
    return {"kind": "APIGroupList", "groups": out}


@pytest.mark.slow  # waits out the request deadline (2 s)
def test_a_trickled_answer_ends_within_the_request_deadline(proxy: faultproxy.FaultProxy) -> None:
    # A byte every 0.5 s never trips a timeout between bytes (2 s): only a total deadline ends it.
    client = client_for(proxy, kube.Settings(request_timeout=2.0, retry_budget=3.0, backoff_base=0.05))
    proxy.add(faultproxy.Rule(method="GET", path=CONFIGMAPS_LIST, trickle=(1, 0.5), trickle_for=25))

    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(errors.Unreachable, match="no complete answer within"):
            await client.list(apply.CONFIGMAP, namespace=NS)
        await client.aclose()
        return time.monotonic() - started

    assert run(main) < 6.0  # at most max(request timeout, retry budget), plus scheduling


@pytest.mark.slow  # waits out the retry budget (2 s)
@pytest.mark.parametrize("value", ["86400", "inf", "1e400"])
def test_a_retry_after_beyond_the_budget_gives_up_at_once_and_never_wedges_the_cluster(
    proxy: faultproxy.FaultProxy, value: str
) -> None:
    client = client_for(proxy)
    status = {"kind": "Status", "status": "Failure", "reason": "TooManyRequests", "code": 429}
    proxy.add(
        faultproxy.Rule(
            method="GET",
            path=CONFIGMAPS_LIST,
            count=1,
            status=429,
            headers={"Retry-After": value},
            body=status,
        )
    )

    async def main() -> tuple[float, float]:
        started = time.monotonic()
        with pytest.raises(errors.ClusterError, match=r"Retry-After .* beyond the retry budget"):
            await client.list(apply.CONFIGMAP, namespace=NS)
        first = time.monotonic() - started
        started = time.monotonic()
        await client.list(apply.CONFIGMAP, namespace=NS)  # the next request is not held for a day
        await client.aclose()
        return first, time.monotonic() - started

    first, second = run(main, within=20)
    assert first < 1.0
    assert second <= FAST.retry_budget + 2.0  # a pause is capped at the retry budget


@pytest.mark.slow  # waits out the retry budget (2 s)
def test_a_retry_after_of_a_day_from_the_sim_does_not_wedge_the_cluster(sim: testing.SimHandle) -> None:
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    client = kube.Client(cluster="one", context=kc.context("one"), settings=FAST)
    sim.faults_sync(
        "one", {"status": 429, "retryAfter": 86400, "method": "GET", "path": "configmaps", "count": 1}
    )

    async def main() -> None:
        with pytest.raises(errors.ClusterError, match="beyond the retry budget"):
            await client.list(apply.CONFIGMAP, namespace=NS)
        await client.list(apply.CONFIGMAP, namespace=NS)
        await client.aclose()

    run(main, within=15)


@pytest.mark.parametrize("value", ["nan", "-5", "soon", "Wed, 21 Oct 2015 07:28:00 GMT", ""])
def test_an_odd_retry_after_is_read_as_no_advice_and_the_request_is_retried(
    proxy: faultproxy.FaultProxy, value: str
) -> None:
    client = client_for(proxy)
    status = {"kind": "Status", "status": "Failure", "reason": "TooManyRequests", "code": 429}
    rule = proxy.add(
        faultproxy.Rule(
            method="GET",
            path=CONFIGMAPS_LIST,
            count=2,
            status=429,
            headers={"Retry-After": value},
            body=status,
        )
    )

    async def main() -> None:
        await client.list(apply.CONFIGMAP, namespace=NS)
        await client.aclose()

    run(main, within=10)
    assert rule.fired == 2


def test_a_retry_after_within_the_budget_is_still_honoured(proxy: faultproxy.FaultProxy) -> None:
    client = client_for(proxy)
    status = {"kind": "Status", "status": "Failure", "reason": "TooManyRequests", "code": 429}
    proxy.add(
        faultproxy.Rule(
            method="GET", path=CONFIGMAPS_LIST, count=1, status=429, headers={"Retry-After": "1"}, body=status
        )
    )

    async def main() -> float:
        started = time.monotonic()
        await client.list(apply.CONFIGMAP, namespace=NS)
        await client.aclose()
        return time.monotonic() - started

    assert run(main) >= 1.0


def test_a_repeated_continue_token_is_an_error_not_an_endless_list(proxy: faultproxy.FaultProxy) -> None:
    client = client_for(proxy)
    rule = proxy.add(
        faultproxy.Rule(
            method="GET", path=CONFIGMAPS_LIST, edit=faultproxy.endless_continue(), drop_query=("continue",)
        )
    )

    async def main() -> None:
        with pytest.raises(
            errors.ClusterError, match=r"list configmaps in default: .*same continue token again"
        ):
            await client.list(apply.CONFIGMAP, namespace=NS)
        await client.aclose()

    run(main)
    assert rule.fired == 2


def test_a_list_that_pages_forever_stops_at_the_page_cap(proxy: faultproxy.FaultProxy) -> None:
    settings = kube.Settings(request_timeout=2.0, retry_budget=3.0, max_list_pages=20)
    client = client_for(proxy, settings)
    rule = proxy.add(
        faultproxy.Rule(
            method="GET",
            path=CONFIGMAPS_LIST,
            edit=faultproxy.endless_continue(fresh=True),
            drop_query=("continue",),
        )
    )

    async def main() -> None:
        with pytest.raises(errors.ClusterError, match="list configmaps in default: more than 20 pages"):
            await client.list(apply.CONFIGMAP, namespace=NS)
        await client.aclose()

    run(main)
    assert rule.fired == 20


def test_the_default_page_cap_is_finite() -> None:
    assert 0 < kube.Settings().max_list_pages <= 10_000


HUGE = {
    "streamed": {"pad": 50_000_000},  # chunked: no length known before reading
    "with its length": {"status": 200, "body": b'{"items": []}' + b" " * 50_000_000},
}


@pytest.mark.parametrize("huge", sorted(HUGE))
def test_a_50_mb_answer_is_refused_with_a_clear_error_under_the_default_limit(
    proxy: faultproxy.FaultProxy, huge: str
) -> None:
    client = client_for(proxy, kube.Settings(request_timeout=20.0, retry_budget=20.0))
    rule = proxy.add(faultproxy.Rule(method="GET", path=CONFIGMAPS_LIST, **HUGE[huge]))

    async def main() -> None:
        with pytest.raises(
            errors.ClusterError, match=r"list configmaps in default: the answer is larger than"
        ):
            await client.list(apply.CONFIGMAP, namespace=NS)
        await client.aclose()

    run(main)
    assert rule.fired == 1  # too large is not retried: it would be too large again


def test_the_pages_of_one_list_are_bounded_in_bytes_together(proxy: faultproxy.FaultProxy) -> None:
    settings = kube.Settings(
        request_timeout=5.0, retry_budget=5.0, max_answer_bytes=300_000, max_list_bytes=1_000_000
    )
    client = client_for(proxy, settings)
    proxy.add(
        faultproxy.Rule(
            method="GET",
            path=CONFIGMAPS_LIST,
            pad=200_000,
            edit=faultproxy.endless_continue(fresh=True),
            drop_query=("continue",),
        )
    )

    async def main() -> None:
        with pytest.raises(
            errors.ClusterError, match=r"list configmaps in default: .*more than 1000000 bytes"
        ):
            await client.list(apply.CONFIGMAP, namespace=NS)
        await client.aclose()

    run(main)


def test_retry_delays_grow_up_to_their_cap_and_are_jittered() -> None:
    for attempt in range(1, 70):
        full = min(8.0, 0.2 * 2 ** (attempt - 1))
        delays = {kube.retry_delay(attempt, base=0.2, cap=8.0) for _ in range(50)}
        assert all(full / 2 <= d <= full for d in delays)
        assert len(delays) > 40  # jittered: retries of many clients spread out
