"""Builders of `fleet.core.model` values for the placement and render tests (plain constructors, no logic)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fleet.core import model


def cluster(
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    facts: Mapping[str, Any] | None = None,
    paused: bool = False,
) -> model.Cluster:
    return model.Cluster(
        name=name,
        labels=dict(labels or {}),
        annotations=dict(annotations or {}),
        context=name,
        paused=paused,
        facts=dict(facts or {}),
        path=f"clusters/{name}.yaml",
    )


def selector(
    match_labels: Mapping[str, str] | None = None,
    *expressions: tuple[str, str, Iterable[str]],
) -> model.LabelSelector:
    return model.LabelSelector(
        match_labels=tuple((match_labels or {}).items()),
        match_expressions=tuple(
            model.Requirement(k, model.Operator(op), tuple(vs)) for k, op, vs in expressions
        ),
    )


def placement(
    *,
    clusters: Iterable[str] | None = None,
    cluster_selector: model.LabelSelector | None = None,
    cel: str | None = None,
) -> model.Placement:
    return model.Placement(
        clusters=tuple(clusters) if clusters is not None else None,
        cluster_selector=cluster_selector,
        cel=cel,
        lines={"clusters": 5, "clusterSelector": 6, "cel": 7},
    )


def obj(
    kind: str,
    name: str,
    *,
    api_version: str = "v1",
    namespace: str | None = None,
    annotations: Mapping[str, str] | None = None,
    **rest: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **rest}


def deployment(
    name: str, *, namespace: str | None = None, replicas: int = 1, image: str = "nginx:1"
) -> dict[str, Any]:
    return obj(
        "Deployment",
        name,
        api_version="apps/v1",
        namespace=namespace,
        spec={"replicas": replicas, "template": {"spec": {"containers": [{"name": name, "image": image}]}}},
    )


def bundle(
    name: str,
    objects: Iterable[Mapping[str, Any]] = (),
    *,
    placement: model.Placement | None = None,
    namespace: str | None = None,
    overrides: Iterable[model.Override] = (),
    depends_on: Iterable[str] = (),
) -> model.Bundle:
    return model.Bundle(
        name=name,
        path=f"bundles/{name}/bundle.yaml",
        namespace=namespace,
        placement=placement,
        overrides=tuple(overrides),
        depends_on=tuple(depends_on),
        manifests=tuple(
            model.Manifest(path=f"bundles/{name}/manifests.yaml", line=1 + 10 * i, index=i, obj=o)
            for i, o in enumerate(objects)
        ),
    )


def override(
    placement: model.Placement,
    *patches: tuple[model.PatchTarget, Any, Any],
    line: int = 20,
) -> model.Override:
    """`patches` are (target, merge, json) triples."""
    return model.Override(
        placement=placement,
        patches=tuple(
            model.Patch(target=t, merge=m, json=tuple(j) if j is not None else None, line=line + 1 + i)
            for i, (t, m, j) in enumerate(patches)
        ),
        line=line,
    )


def repo(
    clusters: Iterable[model.Cluster], bundles: Iterable[model.Bundle], *, revision: str | None = None
) -> model.Repo:
    return model.Repo(
        revision=revision,
        clusters={c.name: c for c in clusters},
        bundles={b.name: b for b in bundles},
    )
