"""Defaulting and normalisation of built-in objects (docs/sim.md, "Defaulting and normalisation")."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from fleet.sim.kinds import defaults

# Canonical forms from the resource.Quantity documentation and rules (apimachinery quantity.go):
# no precision lost, no fractional digits, largest suffix, format kept (binary stays binary when
# the value is a whole number of at least 1024, else it becomes decimal).
QUANTITIES = [
    ("1000m", "1"),
    ("1024Mi", "1Gi"),
    ("0.5", "500m"),
    ("1.5", "1500m"),
    ("1.5Gi", "1536Mi"),
    ("100m", "100m"),
    ("2000", "2k"),
    ("1500", "1500"),
    ("1000000m", "1k"),
    ("1000k", "1M"),
    ("1e3", "1e3"),
    ("1000e0", "1e3"),
    ("12e2", "1200"),
    ("1e-3", "1e-3"),
    ("0.5Ki", "512"),
    ("0.1Ki", "102400m"),
    ("1.1Ki", "1126400m"),
    ("0", "0"),
    ("0Mi", "0"),
    ("-1Gi", "-1Gi"),
    ("+1", "1"),
    ("01", "1"),
    (".5", "500m"),
    ("0.0001n", "1n"),
    ("1Ei", "1Ei"),
    ("1000E", "1e21"),
    ("5Gi", "5Gi"),
    ("128974848", "128974848"),
    ("129e6", "129e6"),
    ("123Mi", "123Mi"),
    (0.5, "500m"),
    (2, "2"),
]


@pytest.mark.parametrize(("given", "canonical"), QUANTITIES)
def test_quantities_are_written_in_canonical_form(given: str | float, canonical: str) -> None:
    assert defaults.canonical_quantity(given) == canonical


@pytest.mark.parametrize("bad", ["", "abc", "1x", "1KiB", "--1", "1.2.3"])
def test_a_malformed_quantity_is_rejected(bad: str) -> None:
    with pytest.raises(defaults.InvalidQuantity):
        defaults.canonical_quantity(bad)


def deployment(image: str = "nginx:1.27") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "ports": [{"containerPort": 80}],
                            "resources": {
                                "requests": {"cpu": "1000m", "memory": "1024Mi"},
                                "limits": {"cpu": 0.5},
                            },
                        }
                    ]
                },
            },
        },
    }


def test_a_deployment_gets_the_real_defaults() -> None:
    out = defaults.default(deployment(), group="apps", kind="Deployment")
    spec = out["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Always"
    assert pod["dnsPolicy"] == "ClusterFirst"
    assert pod["schedulerName"] == "default-scheduler"
    assert pod["securityContext"] == {}
    assert pod["terminationGracePeriodSeconds"] == 30
    container = pod["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "File"
    assert container["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "500m"}}


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("registry:5000/team/nginx", "Always"),
        ("registry:5000/team/nginx:1.2", "IfNotPresent"),
        ("nginx@sha256:" + "a" * 64, "IfNotPresent"),
        ("nginx:1.27", "IfNotPresent"),
    ],
)
def test_image_pull_policy_follows_the_tag(image: str, policy: str) -> None:
    out = defaults.default(deployment(image), group="apps", kind="Deployment")
    assert out["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_defaulting_does_not_mutate_its_input_and_is_idempotent() -> None:
    given = deployment()
    frozen = copy.deepcopy(given)
    once = defaults.default(given, group="apps", kind="Deployment")
    assert given == frozen
    assert defaults.default(once, group="apps", kind="Deployment") == once


def test_explicit_values_are_kept() -> None:
    given = deployment()
    given["spec"]["replicas"] = 0
    given["spec"]["strategy"] = {"type": "Recreate"}
    out = defaults.default(given, group="apps", kind="Deployment")
    assert out["spec"]["replicas"] == 0
    assert out["spec"]["strategy"] == {"type": "Recreate"}


def test_a_service_gets_type_affinity_protocol_and_target_port() -> None:
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]},
    }
    out = defaults.default(svc, group="", kind="Service")
    assert out["spec"]["type"] == "ClusterIP"
    assert out["spec"]["sessionAffinity"] == "None"
    assert out["spec"]["ports"] == [
        {"port": 80, "protocol": "TCP", "targetPort": 80},
        {"port": 53, "protocol": "UDP", "targetPort": "dns"},
    ]


def test_secret_string_data_is_folded_into_data() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "data": {"a": "eA=="},
        "stringData": {"b": "hello"},
    }
    out = defaults.default(secret, group="", kind="Secret")
    assert "stringData" not in out
    assert out["data"] == {"a": "eA==", "b": base64.b64encode(b"hello").decode()}
    assert out["type"] == "Opaque"


def test_statefulset_daemonset_job_and_cronjob_get_their_common_defaults() -> None:
    template = {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}
    sts = defaults.default(
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"template": template}},
        group="apps",
        kind="StatefulSet",
    )
    assert sts["spec"]["podManagementPolicy"] == "OrderedReady"
    assert sts["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    ds = defaults.default(
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "spec": {"template": template}},
        group="apps",
        kind="DaemonSet",
    )
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    job = defaults.default(
        {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": template}}, group="batch", kind="Job"
    )
    assert (job["spec"]["completions"], job["spec"]["parallelism"], job["spec"]["backoffLimit"]) == (1, 1, 6)
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30
    cron = defaults.default(
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}},
        },
        group="batch",
        kind="CronJob",
    )
    assert cron["spec"]["concurrencyPolicy"] == "Allow"
    assert cron["spec"]["successfulJobsHistoryLimit"] == 3
    assert (
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"]
        == "IfNotPresent"
    )


def test_quantities_outside_pods_are_canonical_too() -> None:
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "spec": {"resources": {"requests": {"storage": "2048Mi"}}},
    }
    out = defaults.default(pvc, group="", kind="PersistentVolumeClaim")
    assert out["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert out["spec"]["volumeMode"] == "Filesystem"
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "spec": {"hard": {"cpu": "2000m", "pods": "10"}}}
    assert defaults.default(quota, group="", kind="ResourceQuota")["spec"]["hard"] == {
        "cpu": "2",
        "pods": "10",
    }


def test_a_bad_quantity_in_an_object_names_its_path() -> None:
    given = deployment()
    given["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "lots"
    with pytest.raises(
        defaults.InvalidQuantity, match=r"\.spec\.template\.spec\.containers\[0\]\.resources\.limits\.cpu"
    ):
        defaults.default(given, group="apps", kind="Deployment")
