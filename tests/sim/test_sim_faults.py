"""Fault injection, compaction and the request journal, through the `/_sim/` admin endpoints (docs/sim.md)."""

from __future__ import annotations

import json
import ssl
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from fleet.core import errors
from fleet.sim import testing

CM = "/api/v1/namespaces/default/configmaps"


def admin(sim: testing.SimHandle, method: str, path: str, body: Any = None) -> httpx.Response:
    with httpx.Client(base_url=sim.admin_url, timeout=10) as c:
        return c.request(method, "/_sim" + path, json=body)


def add_rule(sim: testing.SimHandle, rule: dict[str, Any], cluster: str = "c1") -> None:
    r = admin(sim, "POST", f"/clusters/{cluster}/faults", rule)
    assert r.status_code == 201, r.text


def test_admin_lists_the_clusters(sim: testing.SimHandle) -> None:
    assert admin(sim, "GET", "/clusters").json() == {"clusters": ["c1", "c2"]}


def test_an_unknown_cluster_in_an_admin_path_gets_404(sim: testing.SimHandle) -> None:
    assert admin(sim, "POST", "/clusters/nope/compact").status_code == 404


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"status": 200}, "status"),
        ({"status": 500, "method": "FETCH"}, "method"),
        ({"status": 500, "path": "("}, "path"),
        ({"status": 500, "userAgent": "("}, "userAgent"),
        ({"status": 500, "userAgent": 3}, "userAgent"),
        ({"status": 500, "rate": 2}, "rate"),
        ({"status": 500, "sometimes": True}, "sometimes"),
        ({"count": 1}, "needs one of"),
        ({"hold": "yes"}, "hold:"),
        ({"hold": True, "status": 503}, "hold:"),
        ({"hold": True, "hang": True}, "hold:"),
        ({"hold": True, "loseAnswer": True}, "hold:"),
        ({"loseAnswer": True, "status": 503}, "loseAnswer:"),
        ({"loseAnswer": 1}, "loseAnswer:"),
    ],
)
def test_an_invalid_fault_rule_gets_400_naming_the_field(
    sim: testing.SimHandle, rule: dict[str, Any], field: str
) -> None:
    r = admin(sim, "POST", "/clusters/c1/faults", rule)
    assert r.status_code == 400 and field in r.json()["error"]


def test_a_status_fault_answers_a_real_status_with_retry_after(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    add_rule(sim, {"status": 429, "retryAfter": 3, "count": 1})
    r = client.get(CM)
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "TooManyRequests" and body["code"] == 429
    assert body["details"]["retryAfterSeconds"] == 3
    assert client.get(CM).status_code == 200


def test_a_server_error_fault_has_the_internal_error_shape(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    add_rule(sim, {"status": 503})
    body = client.get(CM).json()
    assert (body["code"], body["reason"]) == (503, "ServiceUnavailable")


def test_after_and_count_choose_which_matching_requests_fail(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    add_rule(sim, {"status": 500, "method": "GET", "path": "configmaps", "after": 1, "count": 2})
    codes = [client.get(CM).status_code for _ in range(5)]
    assert codes == [200, 500, 500, 200, 200]
    assert client.get("/api/v1/namespaces").status_code == 200


def test_rules_match_by_method_and_leave_other_methods_alone(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    add_rule(sim, {"status": 409, "method": "POST"})
    assert client.get(CM).status_code == 200
    assert client.post(CM, json={"metadata": {"name": "x"}}).status_code == 409


def test_a_rate_of_zero_never_fires(sim: testing.SimHandle, client: httpx.Client) -> None:
    add_rule(sim, {"status": 500, "rate": 0})
    assert {client.get(CM).status_code for _ in range(5)} == {200}


def test_clearing_faults_restores_normal_answers(sim: testing.SimHandle, client: httpx.Client) -> None:
    add_rule(sim, {"status": 500})
    assert client.get(CM).status_code == 500
    assert admin(sim, "DELETE", "/clusters/c1/faults").status_code == 200
    assert client.get(CM).status_code == 200


def test_faults_apply_only_to_their_cluster(sim: testing.SimHandle) -> None:
    add_rule(sim, {"status": 500}, cluster="c2")
    with httpx.Client(timeout=10) as c:
        assert c.get(sim.url("c1") + CM).status_code == 200
        assert c.get(sim.url("c2") + CM).status_code == 500


def test_a_latency_fault_delays_the_answer_past_a_short_client_timeout(sim: testing.SimHandle) -> None:
    add_rule(sim, {"latencyMs": 3000, "count": 1})
    with httpx.Client(base_url=sim.url("c1"), timeout=0.3) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.get(CM)


def put_over(sim: testing.SimHandle, rv: str, value: str, agent: str) -> httpx.Response:
    """A PUT of ConfigMap `held` over resourceVersion `rv` (a compare-and-swap), sent as `agent`."""
    body = {"metadata": {"name": "held", "resourceVersion": rv}, "data": {"v": value}}
    with httpx.Client(base_url=sim.url("c1"), timeout=30) as c:
        return c.put(CM + "/held", json=body, headers={"User-Agent": agent})


def rules(sim: testing.SimHandle) -> list[dict[str, int]]:
    rules: list[dict[str, int]] = admin(sim, "GET", "/clusters/c1/faults").json()["rules"]
    return rules


def wait_until(check: Any, *, within: float = 10.0) -> None:
    """Polls `check` (the sim's fault counters: no event tells of them) until it holds, else fails."""
    end = time.monotonic() + within
    while not check():
        assert time.monotonic() < end, "not within the time allowed"
        time.sleep(0.02)


def journal_of(sim: testing.SimHandle, agent: str) -> list[tuple[str, int, bool]]:
    return [
        (e["method"], e["status"], e["mutated"]) for e in sim.journal_sync("c1") if e["userAgent"] == agent
    ]


def test_a_latency_fault_holds_a_write_before_the_server_applies_it_so_a_write_sent_later_lands_first(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    rv = client.post(CM, json={"metadata": {"name": "held"}}).json()["metadata"]["resourceVersion"]
    add_rule(sim, {"latencyMs": 1500, "method": "PUT", "userAgent": "^late$", "count": 1})
    with ThreadPoolExecutor(1) as pool:
        late: Future[httpx.Response] = pool.submit(put_over, sim, rv, "late", "late")
        wait_until(lambda: rules(sim)[0]["fired"] == 1)
        assert put_over(sim, rv, "early", "early").status_code == 200  # sent after, applied first
        # The delayed write is checked against the object as it is when the delay ends: a conflict.
        assert late.result(timeout=30).status_code == 409
    assert client.get(CM + "/held").json()["data"] == {"v": "early"}
    assert journal_of(sim, "late") == [("PUT", 409, False)]


def test_a_held_write_is_applied_only_once_its_rules_are_cleared(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    rv = client.post(CM, json={"metadata": {"name": "held"}}).json()["metadata"]["resourceVersion"]
    add_rule(sim, {"hold": True, "method": "PUT", "userAgent": "^late$", "count": 1})
    with ThreadPoolExecutor(1) as pool:
        late: Future[httpx.Response] = pool.submit(put_over, sim, rv, "late", "late")
        wait_until(lambda: rules(sim)[0]["held"] == 1)
        assert put_over(sim, rv, "early", "early").status_code == 200
        assert not late.done() and journal_of(sim, "late") == []  # nothing of it processed yet
        assert rules(sim) == [{"matched": 1, "fired": 1, "held": 1}]
        assert admin(sim, "DELETE", "/clusters/c1/faults").status_code == 200  # releases it
        assert late.result(timeout=30).status_code == 409
    assert client.get(CM + "/held").json()["data"] == {"v": "early"}
    assert journal_of(sim, "late") == [("PUT", 409, False)]
    assert client.get(CM + "/held").status_code == 200  # nothing else held


def test_a_held_request_is_released_in_process_and_answered_as_without_a_rule(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    sim.faults_sync("c1", {"hold": True, "path": "configmaps$", "count": 1})
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(client.get, CM)
        wait_until(lambda: sim.fault_rules_sync("c1")[0]["held"] == 1)
        sim.clear_faults_sync("c1")
        assert held.result(timeout=30).status_code == 200
    assert sim.fault_rules_sync("c1") == []


def test_a_held_write_whose_client_gives_up_is_dropped_unprocessed(sim: testing.SimHandle) -> None:
    add_rule(sim, {"hold": True, "method": "POST"})
    with httpx.Client(base_url=sim.url("c1"), timeout=0.3) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post(CM, json={"metadata": {"name": "dropped"}})
    wait_until(lambda: rules(sim)[0]["held"] == 0)  # its connection closed: the request is gone
    sim.clear_faults_sync("c1")
    with httpx.Client(base_url=sim.url("c1"), timeout=10) as c:
        assert c.get(CM + "/dropped").status_code == 404
    assert [e["method"] for e in sim.journal_sync("c1")] == ["GET"]


def test_a_hanging_request_never_answers(sim: testing.SimHandle) -> None:
    add_rule(sim, {"hang": True, "path": "configmaps"})
    with httpx.Client(base_url=sim.url("c1"), timeout=0.5) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.get(CM)
        assert c.get("/api/v1/namespaces").status_code == 200


def test_a_refused_request_has_its_connection_closed(sim: testing.SimHandle) -> None:
    add_rule(sim, {"refuse": True, "count": 1})
    with httpx.Client(base_url=sim.url("c1"), timeout=5) as c:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            c.get(CM)
        assert c.get(CM).status_code == 200


def test_a_lost_answer_fault_applies_the_write_then_closes_the_connection_without_an_answer(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    rv = client.post(CM, json={"metadata": {"name": "held"}}).json()["metadata"]["resourceVersion"]
    add_rule(sim, {"loseAnswer": True, "method": "PUT", "userAgent": "^lost$", "count": 1})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        put_over(sim, rv, "landed", "lost")
    assert client.get(CM + "/held").json()["data"] == {"v": "landed"}  # the write landed
    assert journal_of(sim, "lost") == [("PUT", 200, True)]
    assert put_over(sim, rv, "again", "lost").status_code == 409  # a retry meets its own write
    assert rules(sim) == [{"matched": 2, "fired": 1, "held": 0}]


def test_drop_watches_closes_open_streams_and_new_ones(sim: testing.SimHandle, client: httpx.Client) -> None:
    rv = client.get(CM).json()["metadata"]["resourceVersion"]
    params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "60"}
    # A read timeout far below timeoutSeconds: the stream must end because of the fault, not the timeout.
    with httpx.Client(base_url=sim.url("c1"), timeout=5) as c, c.stream("GET", CM, params=params) as r:
        assert r.status_code == 200
        add_rule(sim, {"dropWatches": True, "count": 2, "path": "^/api/v1/namespaces/default/configmaps$"})
        assert list(r.iter_lines()) == []
    with httpx.Client(base_url=sim.url("c1"), timeout=5) as c, c.stream("GET", CM, params=params) as r:
        assert r.status_code == 200 and list(r.iter_lines()) == []
    assert client.get(CM).status_code == 200


def test_admin_compact_makes_an_old_resume_expire(sim: testing.SimHandle, client: httpx.Client) -> None:
    rv = client.post(CM, json={"metadata": {"name": "a"}}).json()["metadata"]["resourceVersion"]
    client.post(CM, json={"metadata": {"name": "b"}})
    r = admin(sim, "POST", "/clusters/c1/compact")
    assert r.status_code == 200 and int(r.json()["resourceVersion"]) > int(rv)
    params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "5"}
    with client.stream("GET", CM, params=params) as resp:
        events = [json.loads(x) for x in resp.iter_lines() if x]
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]


def test_the_journal_records_client_requests_with_seq_status_and_mutated(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    client.get(CM, params={"limit": "5"})
    client.post(CM, json={"metadata": {"name": "j"}})
    client.post(CM, json={"metadata": {"name": "j"}})
    client.patch(
        CM + "/j", content=b'{"data":null}', headers={"Content-Type": "application/merge-patch+json"}
    )
    entries = admin(sim, "GET", "/clusters/c1/journal").json()["requests"]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert [(e["method"], e["status"], e["mutated"]) for e in entries] == [
        ("GET", 200, False),
        ("POST", 201, True),
        ("POST", 409, False),
        ("PATCH", 200, False),  # a no-op patch changes nothing
    ]
    assert entries[0]["path"] == CM and entries[0]["query"] == "limit=5"
    later = admin(sim, "GET", "/clusters/c1/journal?since=2").json()["requests"]
    assert [e["seq"] for e in later] == [3, 4]


def test_the_journal_seq_keeps_counting_and_records_faulted_requests(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    add_rule(sim, {"status": 503, "count": 1})
    client.get(CM)
    client.get(CM)
    entries = sim.journal_sync("c1")
    assert [(e["seq"], e["status"]) for e in entries] == [(1, 503), (2, 200)]
    assert sim.journal_sync("c2") == []


def test_the_journal_records_each_requests_user_agent_faulted_ones_included(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    add_rule(sim, {"status": 503, "count": 1})
    client.get(CM, headers={"User-Agent": "fleet/0.1.0 (replica a-1)"})
    client.post(CM, json={"metadata": {"name": "ua"}}, headers={"User-Agent": "fleet/0.1.0 (replica b-2)"})
    client.get(CM, headers={"User-Agent": ""})
    entries = sim.journal_sync("c1")
    assert [(e["status"], e["userAgent"]) for e in entries] == [
        (503, "fleet/0.1.0 (replica a-1)"),
        (201, "fleet/0.1.0 (replica b-2)"),
        (200, ""),
    ]


def test_a_fault_rule_can_act_on_the_requests_of_one_client_only(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    add_rule(sim, {"status": 503, "userAgent": r"\(replica b-"})
    a = client.get(CM, headers={"User-Agent": "fleet/0.1.0 (replica a-1)"})
    b = client.get(CM, headers={"User-Agent": "fleet/0.1.0 (replica b-2)"})
    assert (a.status_code, b.status_code) == (200, 503)
    rules = admin(sim, "GET", "/clusters/c1/faults").json()["rules"]
    assert [(r["matched"], r["fired"]) for r in rules] == [(1, 1)]


def test_the_in_process_handle_reads_cluster_state_on_the_server_loop(
    sim: testing.SimHandle, client: httpx.Client
) -> None:
    listed = client.get(CM).json()["metadata"]["resourceVersion"]
    assert str(sim.call_sync(lambda: sim.cluster("c1").rv)) == listed
    one = sim.kubeconfig_for("c2")
    assert [c["name"] for c in one["contexts"]] == ["c2"] and one["current-context"] == "c2"
    assert one["clusters"][0]["cluster"]["server"] == sim.url("c2")


def test_an_invalid_rule_given_in_process_raises_an_input_error(sim: testing.SimHandle) -> None:
    with pytest.raises(errors.InputError, match="rate"):
        sim.faults_sync("c1", {"status": 500, "rate": 5})


def test_admin_endpoints_answer_on_the_first_port_of_a_tls_port_per_cluster_sim() -> None:
    with testing.serving(names=["p1", "p2"], tls=True, port_per_cluster=True) as sim:
        assert sim.ca_pem is not None
        trust = ssl.create_default_context(cadata=sim.ca_pem.decode())
        assert sim.admin_url == sim.url("p1")
        with httpx.Client(verify=trust, timeout=10) as c:
            assert c.get(sim.admin_url + "/_sim/clusters").json() == {"clusters": ["p1", "p2"]}
            r = c.post(sim.admin_url + "/_sim/clusters/p2/faults", json={"status": 500, "count": 1})
            assert r.status_code == 201
            assert c.get(sim.url("p2") + CM).status_code == 500
            assert c.get(sim.url("p1") + CM).status_code == 200
            journal = c.get(sim.admin_url + "/_sim/clusters/p2/journal").json()["requests"]
            assert [e["status"] for e in journal] == [500]
