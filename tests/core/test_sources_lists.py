"""`kind: List` and `<Kind>List` documents are expanded to their items, as kubectl does (issue 18)."""

from __future__ import annotations

from fleet.core import model, placement, render, repository
from tests.support import repository_builders as rb


def parse(files: dict[str, str]) -> model.Repo:
    return repository.parse(
        model.Snapshot(revision="a" * 40, files={k: v.encode() for k, v in files.items()})
    )


FILES = {
    "clusters/eu-1.yaml": rb.cluster_yaml("eu-1"),
    "bundles/mon/bundle.yaml": rb.bundle_yaml(
        "mon", spec="  namespace: mon\n  placement:\n    clusterSelector: {}\n"
    ),
}


def test_a_kind_list_and_a_configmaplist_are_expanded_to_their_items_in_order() -> None:
    repo = parse(
        {
            **FILES,
            "bundles/mon/stack.yaml": rb.dedent(
                """
                apiVersion: v1
                kind: List
                items:
                - apiVersion: v1
                  kind: ServiceAccount
                  metadata: {name: prometheus}
                - apiVersion: v1
                  kind: List
                  items:
                  - apiVersion: v1
                    kind: ConfigMap
                    metadata: {name: nested}
                ---
                apiVersion: v1
                kind: ConfigMapList
                metadata: {resourceVersion: ""}
                items:
                - apiVersion: v1
                  kind: ConfigMap
                  metadata: {name: rules}
                  data: {a: "1"}
                - apiVersion: v1
                  kind: ConfigMap
                  metadata: {name: alerts}
                """
            ),
        }
    )
    assert repo.errors == ()
    bundle = repo.bundles["mon"]
    assert [(m.kind, m.name) for m in bundle.manifests] == [
        ("ServiceAccount", "prometheus"),
        ("ConfigMap", "nested"),
        ("ConfigMap", "rules"),
        ("ConfigMap", "alerts"),
    ]
    assert [m.line for m in bundle.manifests] == [4, 10, 18, 22]
    desired, failed = render.render_all(repo, placement.place(repo), revision=repo.revision)
    assert failed == {}
    names = sorted(o["metadata"]["name"] for o in desired[("mon", "eu-1")].objects)
    assert names == ["alerts", "nested", "prometheus", "rules"]


def test_an_empty_list_declares_nothing_and_a_bad_item_is_named_with_its_line() -> None:
    repo = parse(
        {
            **FILES,
            "bundles/mon/empty.yaml": "apiVersion: v1\nkind: List\nitems: []\n",
            "bundles/mon/bad.yaml": rb.dedent(
                """
                apiVersion: v1
                kind: SecretList
                items:
                - apiVersion: v1
                  kind: Secret
                  metadata: {name: ok}
                - metadata: {name: no-kind}
                  data: {password: c2VjcmV0}
                - just text
                """
            ),
        }
    )
    assert [str(p) for p in repo.errors] == [
        "bundles/mon/bad.yaml:7: document 1 item 2 has no apiVersion, no kind",
        "bundles/mon/bad.yaml:9: document 1 item 3 is not a mapping (got a string); each item of a List must be one Kubernetes object",
    ]
    assert "c2VjcmV0" not in " ".join(str(p) for p in repo.problems)


def test_an_object_whose_kind_ends_in_list_without_items_is_an_ordinary_object() -> None:
    repo = parse(
        {
            **FILES,
            "bundles/mon/allow.yaml": "apiVersion: example.com/v1\nkind: AllowList\nmetadata: {name: a}\nspec: {}\n",
        }
    )
    assert repo.errors == ()
    assert [(m.kind, m.name) for m in repo.bundles["mon"].manifests] == [("AllowList", "a")]
