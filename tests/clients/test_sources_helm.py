"""spec.source.helm with the real Helm 4 (tests/tools/bin/helm, built by `make tools`): a chart written for
these tests with dependencies vendored as a folder and as an archive, values per cluster label, `set`,
CRDs, hooks and tests; offline; cached by content (issue 18)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from fleet.clients import sources
from tests.support import sources as ss

# Helm 4 is one of the programs `make tools` builds: without them these tests skip with one line, and under
# CI (CI=true) that is a failure (tests/conftest.py).
pytestmark = [pytest.mark.real, pytest.mark.slow]  # every test here starts processes (helm, sops)


@pytest.fixture(scope="module")
def helm() -> str:
    return ss.helm_program()


def archive(name: str, files: dict[str, str]) -> bytes:
    """A chart archive as `helm package` makes it: NAME/... in a gzipped tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


CHART = "bundles/web/chart"
FILES: dict[str, str | bytes] = {
    "clusters/eu-prod.yaml": ss.cluster("eu-prod", env="prod", region="eu"),
    "clusters/us-prod.yaml": ss.cluster("us-prod", env="prod", region="us"),
    "clusters/eu-dev.yaml": ss.cluster("eu-dev", env="dev", region="eu"),
    "bundles/web/bundle.yaml": ss.bundle(
        "web",
        "  namespace: shop\n"
        "  source:\n"
        "    helm:\n"
        "      chart: chart\n"
        "      releaseName: front\n"
        '      values: [values.yaml, "values-${cluster.labels.env}.yaml"]\n'
        '      set: {image.tag: "2.1", cache.size: 64}\n'
        "      includeCRDs: true\n"
        "  placement: {clusterSelector: {}}\n",
    ),
    "bundles/web/values.yaml": "replicas: 1\ngreeting: hello from ${cluster.name}\n",
    "bundles/web/values-prod.yaml": "replicas: 3\n",
    "bundles/web/values-dev.yaml": "replicas: 1\ndebug: true\n",
    f"{CHART}/Chart.yaml": (
        "apiVersion: v2\nname: web\nversion: 1.0.0\n"
        "dependencies:\n"
        "- {name: cache, version: 0.1.0}\n"
        "- {name: metrics, version: 0.2.0, repository: https://charts.example.com}\n"
    ),
    f"{CHART}/values.yaml": 'replicas: 1\nimage: {repository: shop/web, tag: "1.0"}\ngreeting: hi\ndebug: false\n',
    f"{CHART}/templates/deployment.yaml": (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-web\n"
        "  namespace: {{ .Release.Namespace }}\n"
        "spec:\n  replicas: {{ .Values.replicas }}\n"
        "  selector: {matchLabels: {app: web}}\n"
        "  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n"
        '      - name: web\n        image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"\n'
        "        env:\n        - {name: GREETING, value: {{ .Values.greeting | quote }}}\n"
        "        - {name: DEBUG, value: {{ .Values.debug | quote }}}\n"
        "        - {name: SHELL_VAR, value: '${cluster.name} stays as Helm wrote it'}\n"
    ),
    f"{CHART}/templates/migrate-hook.yaml": (
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-migrate\n"
        '  annotations: {"helm.sh/hook": pre-upgrade}\n'
        "spec:\n  template:\n    spec:\n      restartPolicy: Never\n"
        "      containers: [{name: migrate, image: shop/migrate:1}]\n"
    ),
    f"{CHART}/templates/tests/smoke.yaml": (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {{ .Release.Name }}-smoke\n"
        '  annotations: {"helm.sh/hook": test}\n'
        "spec: {containers: [{name: t, image: busybox}]}\n"
    ),
    f"{CHART}/crds/gadgets.yaml": (
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
        "metadata: {name: gadgets.shop.example.com}\n"
        "spec:\n  group: shop.example.com\n  scope: Cluster\n"
        "  names: {plural: gadgets, singular: gadget, kind: Gadget, listKind: GadgetList}\n"
        "  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]\n"
    ),
    f"{CHART}/templates/gadget.yaml": (
        "apiVersion: shop.example.com/v1\nkind: Gadget\nmetadata: {name: {{ .Release.Name }}-gadget, namespace: oops}\n"
    ),
    f"{CHART}/charts/cache/Chart.yaml": "apiVersion: v2\nname: cache\nversion: 0.1.0\n",
    f"{CHART}/charts/cache/values.yaml": "size: 16\n",
    f"{CHART}/charts/cache/templates/cm.yaml": (
        "apiVersion: v1\nkind: ConfigMapList\nitems:\n"
        "- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: {{ .Release.Name }}-cache}\n"
        "  data: {size: {{ .Values.size | quote }}}\n"
    ),
    f"{CHART}/charts/metrics-0.2.0.tgz": archive(
        "metrics",
        {
            "Chart.yaml": "apiVersion: v2\nname: metrics\nversion: 0.2.0\n",
            "templates/svc.yaml": (
                "apiVersion: v1\nkind: Service\nmetadata: {name: {{ .Release.Name }}-metrics}\n"
                "spec: {ports: [{port: 9090}]}\n"
            ),
        },
    ),
}


def test_a_chart_with_vendored_dependencies_renders_with_values_per_cluster_label(helm: str) -> None:
    cache = sources.Cache()
    out = ss.expand(FILES, settings=sources.Settings(helm_binary=helm), cache=cache)
    assert out.errors == {}
    eu = out.objects("web", "eu-prod")
    assert sorted(eu) == [
        "ConfigMap/front-cache",  # a ConfigMapList from the vendored folder, expanded
        "CustomResourceDefinition/gadgets.shop.example.com",  # includeCRDs
        "Deployment/front-web",
        "Gadget/front-gadget",
        "Job/front-migrate",  # a hook, rendered as a plain object
        "Service/front-metrics",  # from the vendored archive
    ]  # no test Pod: --skip-tests
    web = eu["Deployment/front-web"]
    assert web["spec"]["replicas"] == 3
    container = web["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "shop/web:2.1"  # set, after the files
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GREETING"] == "hello from eu-prod"  # ${cluster.*} in a values file
    assert env["DEBUG"] == "false"
    assert env["SHELL_VAR"] == "${cluster.name} stays as Helm wrote it"  # Helm's output is final
    assert web["metadata"]["namespace"] == "shop" and web["metadata"]["labels"]["fleet.dev/bundle"] == "web"
    assert eu["ConfigMap/front-cache"]["data"] == {"size": "64"}
    assert eu["Job/front-migrate"]["metadata"]["annotations"]["helm.sh/hook"] == "pre-upgrade"
    assert "namespace" not in eu["Gadget/front-gadget"]["metadata"]  # cluster-scoped by the chart's own CRD
    dev = out.objects("web", "eu-dev")["Deployment/front-web"]
    assert dev["spec"]["replicas"] == 1
    dev_env = {e["name"]: e["value"] for e in dev["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert dev_env["DEBUG"] == "true"
    # Each cluster's greeting differs: one helm run per cluster, plus the version check.
    assert ss.started(cache) == {"helm": 4}
    again = ss.expand(FILES, settings=sources.Settings(helm_binary=helm), cache=cache, revision="b" * 40)
    assert ss.started(cache) == {"helm": 4}
    assert again.expanded["web"] is out.expanded["web"]


def test_values_without_cluster_variables_render_once_per_values_file_and_a_change_renders_only_its_clusters(
    helm: str,
) -> None:
    files = {**FILES, "bundles/web/values.yaml": "replicas: 1\ngreeting: hello\n"}
    cache = sources.Cache()
    first = ss.expand(files, settings=sources.Settings(helm_binary=helm), cache=cache)
    assert first.errors == {}
    assert ss.started(cache) == {"helm": 3}  # version, prod (eu-prod and us-prod share it), dev
    assert first.expanded["web"].renders["eu-prod"] is first.expanded["web"].renders["us-prod"]
    changed = ss.expand(
        {**files, "bundles/web/values-dev.yaml": "replicas: 2\n"},
        settings=sources.Settings(helm_binary=helm),
        cache=cache,
        revision="c" * 40,
    )
    assert ss.started(cache) == {"helm": 4}  # dev only
    assert changed.objects("web", "eu-dev")["Deployment/front-web"]["spec"]["replicas"] == 2
    assert changed.desired[("web", "eu-prod")].hash == first.desired[("web", "eu-prod")].hash


def test_a_dependency_from_a_repository_that_is_not_vendored_is_refused_and_helm_never_runs(
    helm: str,
) -> None:
    files = {k: v for k, v in FILES.items() if not k.endswith(".tgz")}
    cache = sources.Cache()
    out = ss.expand(files, settings=sources.Settings(helm_binary=helm), cache=cache)
    assert out.errors[("web", "eu-prod")] == (
        'bundles/web/chart/Chart.yaml:1: dependency "metrics" (from a chart repository) is not vendored in '
        "bundles/web/chart/charts/: fleet never fetches charts; run `helm dependency build` and commit the "
        "charts/ folder"
    )
    assert ss.started(cache) == {"helm": 1}  # the version check only


def test_a_template_error_is_the_bundles_error_with_helms_message(helm: str) -> None:
    files = {**FILES, f"{CHART}/templates/broken.yaml": "value: {{ .Values.nothing.deeper }}\n"}
    out = ss.expand(files, settings=sources.Settings(helm_binary=helm))
    message = out.errors[("web", "eu-prod")]
    assert message.startswith("bundles/web/bundle.yaml:8: helm failed (exit 1): "), message
    assert "broken.yaml" in message and "fleet-render-" not in message


def test_an_encrypted_values_file_is_decrypted_for_helm_and_never_shown(helm: str, tmp_path: Path) -> None:
    recipient = ss.age_identity(tmp_path / "key.txt")
    files = {
        **FILES,
        "bundles/web/bundle.yaml": str(FILES["bundles/web/bundle.yaml"]).replace(
            "  source:\n", "  decrypt: sops\n  source:\n"
        ),
        "bundles/web/values-prod.yaml": ss.sops_encrypt(
            "replicas: 5\ngreeting: s3cret-greeting\n", recipient=recipient
        ),
    }
    settings = sources.Settings(helm_binary=helm, age_key_file=str(tmp_path / "key.txt"))
    out = ss.expand(files, settings=settings)
    assert out.errors == {}
    web = out.objects("web", "us-prod")["Deployment/front-web"]
    assert web["spec"]["replicas"] == 5
    broken = {**files, f"{CHART}/templates/broken.yaml": '{{ fail (printf "bad %s" .Values.greeting) }}\n'}
    failed = ss.expand(broken, settings=settings)
    message = failed.errors[("web", "us-prod")]
    assert "s3cret-greeting" not in message and "<redacted>" in message, message
