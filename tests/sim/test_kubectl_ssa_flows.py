"""The real kubectl's server-side apply, server-side diff and strategic merge patch flows on `fleet sim`.

Differential cases (tests/sim/conftest.py): each runs on the sim and on the real API server, kubectl's
answers compared; kubectl works in the case's own namespace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.differential import Target

# Every test here starts processes (kubectl): `slow`, outside the fast inner loop.
pytestmark = pytest.mark.slow

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: {image}
"""


def manifest(tmp_path: Path, name: str, *, replicas: int = 2, image: str = "nginx:1.27") -> Path:
    path = tmp_path / name
    path.write_text(DEPLOYMENT.format(replicas=replicas, image=image))
    return path


def live(target: Target) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(
        target.kubectl("get", "deployment", "web", "-o", "json", "--show-managed-fields").stdout
    )
    return obj


def owners_of_replicas(obj: dict[str, Any]) -> set[str]:
    return {
        m["manager"]
        for m in obj["metadata"]["managedFields"]
        if "f:replicas" in (m.get("fieldsV1", {}).get("f:spec") or {})
    }


def test_kubectl_server_side_apply_conflicts_with_another_manager_until_forced(
    target: Target, tmp_path: Path
) -> None:
    kubectl = target.kubectl
    first = kubectl("apply", "--server-side", "-f", str(manifest(tmp_path, "a.yaml")))
    assert "deployment.apps/web serverside-applied" in first.stdout
    other = manifest(tmp_path, "b.yaml", replicas=5)
    refused = kubectl("apply", "--server-side", "--field-manager=autoscaler", "-f", str(other), check=False)
    assert refused.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas' in refused.stderr
    assert "--force-conflicts" in refused.stderr  # kubectl's own hint follows the server's message
    assert live(target)["spec"]["replicas"] == 2
    forced = kubectl(
        "apply", "--server-side", "--field-manager=autoscaler", "--force-conflicts", "-f", str(other)
    )
    assert "serverside-applied" in forced.stdout
    after = live(target)
    assert after["spec"]["replicas"] == 5
    assert owners_of_replicas(after) == {"autoscaler"}
    # The same value from both managers is shared ownership, not a conflict.
    kubectl("apply", "--server-side", "-f", str(manifest(tmp_path, "c.yaml", replicas=5)))
    assert owners_of_replicas(live(target)) == {"autoscaler", "kubectl"}


def test_kubectl_server_side_apply_twice_changes_nothing(target: Target, tmp_path: Path) -> None:
    path = manifest(tmp_path, "a.yaml")
    target.kubectl("apply", "--server-side", "-f", str(path))
    rv = live(target)["metadata"]["resourceVersion"]
    target.kubectl("apply", "--server-side", "-f", str(path))
    assert live(target)["metadata"]["resourceVersion"] == rv


def test_kubectl_diff_server_side_shows_the_change_and_stores_nothing(target: Target, tmp_path: Path) -> None:
    kubectl = target.kubectl
    kubectl("apply", "--server-side", "-f", str(manifest(tmp_path, "a.yaml")))
    before = live(target)
    same = kubectl("diff", "--server-side", "-f", str(manifest(tmp_path, "a.yaml")), check=False)
    assert same.returncode == 0 and same.stdout == ""
    changed = kubectl(
        "diff", "--server-side", "-f", str(manifest(tmp_path, "b.yaml", image="nginx:1.28")), check=False
    )
    assert changed.returncode == 1, changed.stderr
    removed = [line for line in changed.stdout.splitlines() if line.startswith("-") and "image:" in line]
    added = [line for line in changed.stdout.splitlines() if line.startswith("+") and "image:" in line]
    assert [line.split("image:")[1].strip() for line in removed + added] == ["nginx:1.27", "nginx:1.28"]
    assert "+  generation: 2" in changed.stdout  # the dry run went through the real write path
    after = live(target)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"


def test_kubectl_strategic_merge_patch_merges_containers_by_name(target: Target, tmp_path: Path) -> None:
    kubectl = target.kubectl
    kubectl("apply", "-f", str(manifest(tmp_path, "a.yaml")))
    sidecar = {"spec": {"template": {"spec": {"containers": [{"name": "proxy", "image": "envoy:1.30"}]}}}}
    kubectl("patch", "deployment", "web", "--type", "strategic", "-p", json.dumps(sidecar))
    names = [c["name"] for c in live(target)["spec"]["template"]["spec"]["containers"]]
    assert names == ["proxy", "web"] or names == ["web", "proxy"]
    image = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}}
    kubectl("patch", "deployment", "web", "--type", "strategic", "-p", json.dumps(image))
    containers = {c["name"]: c["image"] for c in live(target)["spec"]["template"]["spec"]["containers"]}
    assert containers == {"web": "nginx:1.28", "proxy": "envoy:1.30"}
    remove = {"spec": {"template": {"spec": {"containers": [{"name": "proxy", "$patch": "delete"}]}}}}
    kubectl("patch", "deployment", "web", "--type", "strategic", "-p", json.dumps(remove))
    assert [c["name"] for c in live(target)["spec"]["template"]["spec"]["containers"]] == ["web"]
