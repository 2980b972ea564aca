"""Every validation rule of the repository format (docs/repository.md), table-driven: each case changes one
thing in an otherwise valid repository and lists every problem it must produce, with path, line and
message exactly."""

from __future__ import annotations

import textwrap

import pytest

from fleet.core import cel, model, repository
from tests.support import repository_builders as rb

W = model.Severity.WARNING
E = model.Severity.ERROR

BASE: dict[str, str | bytes] = {
    "clusters/c1.yaml": rb.cluster_yaml("c1", labels={"env": "prod", "region": "eu"}),
    "clusters/c2.yaml": rb.cluster_yaml("c2", labels={"env": "dev", "region": "us"}),
    "bundles/web/bundle.yaml": rb.bundle_yaml("web"),
    "bundles/web/cm.yaml": rb.configmap("web"),
    "bundles/base/bundle.yaml": rb.bundle_yaml("base"),
    "bundles/base/cm.yaml": rb.configmap("base"),
}


def parse(files: dict[str, str | bytes], *, base: str = "") -> model.Repo:
    data = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    return repository.parse(model.Snapshot(revision=None, files=data, base=base))


def test_a_bundle_whose_name_differs_from_its_folder_is_broken_under_the_folder_name() -> None:
    repo = parse({**BASE, B: rb.bundle_yaml("webapp")})
    assert sorted(repo.bundles) == ["base"]
    assert list(repo.broken_bundles) == ["web"]


def test_a_cluster_whose_name_differs_from_its_file_is_broken_under_the_file_stem() -> None:
    repo = parse({**BASE, C: rb.cluster_yaml("other")})
    assert sorted(repo.clusters) == ["c2"]
    assert list(repo.broken_clusters) == ["c1"]


def test_no_other_message_quotes_the_value_of_a_credential_looking_field() -> None:
    body = rb.dedent(
        """
        apiVersion: fleet.dev/v1alpha1
        kind: Cluster
        metadata:
          name: "-----BEGIN PRIVATE KEY----- CANARY-1"
          labels:
            token: "CANARY 2 !"
        spec:
          context: {password: CANARY-3}
        """
    )
    repo = parse({**BASE, C: body})
    assert found(repo) == [
        (C, 4, f'credential-looking field "metadata.name": {CRED}', E),
        (C, 6, f'credential-looking field "metadata.labels.token": {CRED}', E),
        (C, 8, f'credential-looking field "spec.context.password": {CRED}', E),
        (C, 8, "spec.context must be a non-empty string, not a mapping", E),
    ]


def found(repo: model.Repo) -> list[tuple[str, int, str, model.Severity]]:
    return [(p.path, p.line, p.message, p.severity) for p in repo.problems]


def test_the_base_repository_is_valid() -> None:
    repo = parse(BASE)
    assert repo.problems == ()
    assert sorted(repo.clusters) == ["c1", "c2"]
    assert sorted(repo.bundles) == ["base", "web"]


C = "clusters/c1.yaml"
B = "bundles/web/bundle.yaml"
DNS = (
    "is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)"
)
CRED = "credentials never live in the repository (put them in the controller's kubeconfig); the value is not shown"
NULL_PLACEMENT = "(omit it to place nowhere, or give clusters, clusterSelector or cel)"


def cluster(body: str) -> dict[str, str | bytes]:
    return {C: rb.dedent(body)}


def bundle(spec: str, *, name: str = "web", head: str = "") -> dict[str, str | bytes]:
    text = head or f"apiVersion: fleet.dev/v1alpha1\nkind: Bundle\nmetadata:\n  name: {name}\n"
    return {B: text + "spec:\n" + textwrap.indent(rb.dedent(spec), "  ")}


# Bundle files built by `bundle(spec)` start the spec on line 5, so its first spec line is line 6.

CASES: list[tuple[str, dict[str, str | bytes], list[tuple[str, int, str, model.Severity]]]] = [
    # ---------------------------------------------------------------- clusters
    (
        "cluster apiVersion is wrong",
        cluster("apiVersion: v1\nkind: Cluster\nmetadata:\n  name: c1\n"),
        [(C, 1, 'apiVersion must be "fleet.dev/v1alpha1", not "v1"', E)],
    ),
    (
        "cluster apiVersion is missing",
        cluster("kind: Cluster\nmetadata:\n  name: c1\n"),
        [(C, 1, 'apiVersion is missing (expected "fleet.dev/v1alpha1")', E)],
    ),
    (
        "cluster kind is wrong",
        cluster("apiVersion: fleet.dev/v1alpha1\nkind: Bundle\nmetadata:\n  name: c1\n"),
        [(C, 2, 'kind must be "Cluster", not "Bundle"', E)],
    ),
    (
        "cluster has an unknown top-level field",
        cluster("apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\nspecs: {}\n"),
        [(C, 5, 'unknown field "specs" (did you mean "spec"?)', E)],
    ),
    (
        "cluster has an unknown spec field",
        cluster(
            "apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\nspec:\n  pasued: true\n"
        ),
        [(C, 6, 'unknown field "spec.pasued" (did you mean "paused"?)', E)],
    ),
    (
        "cluster has an unknown field with no close match",
        cluster("apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\n  zzz: 1\n"),
        [(C, 5, 'unknown field "metadata.zzz"', E)],
    ),
    (
        "cluster name is not a DNS label",
        {"clusters/EU_prod.yaml": rb.cluster_yaml("EU_prod")},
        [("clusters/EU_prod.yaml", 4, f'metadata.name "EU_prod" {DNS}', E)],
    ),
    (
        "cluster name is longer than 63 characters",
        {f"clusters/{'a' * 64}.yaml": rb.cluster_yaml("a" * 64)},
        [
            (
                f"clusters/{'a' * 64}.yaml",
                4,
                f'metadata.name "{"a" * 64}" is 64 characters long, more than 63',
                E,
            )
        ],
    ),
    (
        "cluster name is missing",
        cluster("apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  labels: {}\n"),
        [(C, 3, "metadata.name is missing", E)],
    ),
    (
        "cluster file stem differs from its name",
        {C: rb.cluster_yaml("other")},
        [
            (
                C,
                4,
                'file name "c1.yaml" does not match metadata.name "other" (expected clusters/other.yaml)',
                E,
            )
        ],
    ),
    (
        "cluster label key is invalid",
        cluster(
            'apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\n  labels:\n    "-bad": x\n'
        ),
        [
            (
                C,
                6,
                "metadata.labels key \"-bad\" has a name that is not alphanumeric with '-', '_' or '.' "
                "inside (starting and ending with a letter or digit)",
                E,
            )
        ],
    ),
    (
        "cluster label key prefix is invalid",
        cluster(
            "apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\n  labels:\n    Foo.com/x: y\n"
        ),
        [
            (
                C,
                6,
                'metadata.labels key "Foo.com/x" has a prefix that is not a DNS-1123 subdomain (lowercase, at '
                "most 253 characters)",
                E,
            )
        ],
    ),
    (
        "cluster label value is invalid",
        cluster(
            'apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\n  labels:\n    env: "prod!"\n'
        ),
        [
            (
                C,
                6,
                "metadata.labels.env value \"prod!\" must be empty or alphanumeric with '-', '_' or '.' "
                "inside (starting and ending alphanumeric)",
                E,
            )
        ],
    ),
    (
        "cluster label value is a number",
        cluster(
            "apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\n  labels:\n    tier: 1\n"
        ),
        [(C, 6, "metadata.labels.tier value 1 must be a string, not a number (quote it)", E)],
    ),
    (
        "cluster annotation value is not a string",
        cluster(
            "apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\n  annotations:\n    a: [1]\n"
        ),
        [(C, 6, "metadata.annotations.a must be a string, not a list (quote it)", E)],
    ),
    (
        "cluster paused is not a boolean",
        cluster(
            'apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\nspec:\n  paused: "maybe"\n'
        ),
        [(C, 6, 'spec.paused must be true or false, not "maybe"', E)],
    ),
    (
        "cluster context is empty",
        cluster(
            'apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\nspec:\n  context: ""\n'
        ),
        [(C, 6, 'spec.context must be a non-empty string, not ""', E)],
    ),
    (
        "cluster facts is not a mapping",
        cluster(
            "apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\nspec:\n  facts: [1, 2]\n"
        ),
        [(C, 6, "spec.facts must be a mapping, not a list", E)],
    ),
    (
        "cluster file is not a mapping",
        cluster("- a\n- b\n"),
        [(C, 1, "expected a mapping (a Cluster), not a list", E)],
    ),
    (
        "cluster file is empty",
        {C: "# nothing\n"},
        [(C, 1, "empty file: expected one Cluster", E)],
    ),
    (
        "cluster file holds two documents",
        {C: rb.cluster_yaml("c1") + "---\n" + rb.cluster_yaml("c3")},
        [(C, 8, "one Cluster per file: found a second document", E)],
    ),
    (
        "a second document with a credential",
        {C: rb.cluster_yaml("c1") + "---\nkubeconfig: CANARY-10\n"},
        [
            (C, 8, "one Cluster per file: found a second document", E),
            (C, 8, f'credential-looking field "kubeconfig": {CRED}', E),
        ],
    ),
    (
        "cluster file is malformed YAML",
        {C: "apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\n   labels: x\n"},
        [(C, 5, "invalid YAML: mapping values are not allowed in this context", E)],
    ),
    (
        "two cluster files declare the same name",
        {"clusters/c1.yml": rb.cluster_yaml("c1")},
        [("clusters/c1.yml", 4, 'cluster "c1" is also defined in clusters/c1.yaml', E)],
    ),
    (
        "cluster file holds credential-looking fields",
        cluster(
            """
            apiVersion: fleet.dev/v1alpha1
            kind: Cluster
            metadata:
              name: c1
              annotations:
                vendor.io/bearer: "Bearer CANARY-1"
            spec:
              token: CANARY-2
              kubeconfig: {users: [{name: CANARY-3}]}
              facts:
                client-key: CANARY-4
                clientCertificateData: CANARY-5
                certificate-authority-data: CANARY-6
                db_password: CANARY-7
                ca: "-----BEGIN CERTIFICATE-----\\nCANARY-8\\n-----END CERTIFICATE-----"
                auth: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDQU5BUlkifQ.c2ln
                list: [{secretRef: CANARY-9}]
            """
        ),
        [
            (C, 6, f'credential-looking field "metadata.annotations.vendor.io/bearer": {CRED}', E),
            (C, 8, f'credential-looking field "spec.token": {CRED}', E),
            (C, 9, f'credential-looking field "spec.kubeconfig": {CRED}', E),
            (C, 11, f'credential-looking field "spec.facts.client-key": {CRED}', E),
            (C, 12, f'credential-looking field "spec.facts.clientCertificateData": {CRED}', E),
            (C, 13, f'credential-looking field "spec.facts.certificate-authority-data": {CRED}', E),
            (C, 14, f'credential-looking field "spec.facts.db_password": {CRED}', E),
            (C, 15, f'credential-looking field "spec.facts.ca": {CRED}', E),
            (C, 16, f'credential-looking field "spec.facts.auth": {CRED}', E),
            (C, 17, f'credential-looking field "spec.facts.list[0].secretRef": {CRED}', E),
        ],
    ),
    # ---------------------------------------------------------------- bundles: identity and fields
    (
        "bundle apiVersion and kind are wrong",
        {B: "apiVersion: fleet.dev/v1\nkind: Bundel\nmetadata:\n  name: web\n"},
        [
            (B, 1, 'apiVersion must be "fleet.dev/v1alpha1", not "fleet.dev/v1"', E),
            (B, 2, 'kind must be "Bundle", not "Bundel"', E),
        ],
    ),
    (
        "bundle has an unknown spec field",
        bundle("  placment:\n    clusters: [c1]\n"),
        [(B, 6, 'unknown field "spec.placment" (did you mean "placement"?)', E)],
    ),
    (
        "bundle folder differs from its name",
        bundle("  placement: {clusters: [c1]}\n", name="webapp"),
        [(B, 4, 'folder "bundles/web" does not match metadata.name "webapp" (expected bundles/webapp/)', E)],
    ),
    (
        "bundle name is not a DNS label",
        {
            "bundles/Web/bundle.yaml": rb.bundle_yaml("Web"),
            "bundles/Web/cm.yaml": rb.configmap("w"),
        },
        [("bundles/Web/bundle.yaml", 4, f'metadata.name "Web" {DNS}', E)],
    ),
    (
        "bundle namespace is not a DNS label",
        bundle("  namespace: Web_NS\n"),
        [(B, 6, f'spec.namespace "Web_NS" {DNS}', E)],
    ),
    (
        "bundle boolean field is not a boolean",
        bundle("  prune: sometimes\n"),
        [(B, 6, 'spec.prune must be true or false, not "sometimes"', E)],
    ),
    (
        "bundle has a second document",
        {B: rb.bundle_yaml("web") + "---\n" + rb.bundle_yaml("x")},
        [(B, 9, "one Bundle per file: found a second document", E)],
    ),
    # ---------------------------------------------------------------- dependsOn
    (
        "dependsOn names an unknown bundle",
        bundle("  dependsOn: [base, nope]\n"),
        [(B, 6, 'spec.dependsOn[1] "nope": no such bundle', E)],
    ),
    (
        "dependsOn forms a cycle",
        {
            **bundle("  dependsOn:\n    - base\n"),
            "bundles/base/bundle.yaml": rb.bundle_yaml("base", spec="  dependsOn: [web]\n"),
        },
        [
            ("bundles/base/bundle.yaml", 6, "spec.dependsOn: dependency cycle base -> web -> base", E),
            (B, 6, "spec.dependsOn: dependency cycle base -> web -> base", E),
        ],
    ),
    (
        "a bundle depends on itself",
        bundle("  dependsOn: [web]\n"),
        [(B, 6, "spec.dependsOn: dependency cycle web -> web", E)],
    ),
    # ---------------------------------------------------------------- placement and selectors
    (
        "placement is empty",
        bundle("  placement: {}\n"),
        [(B, 6, f"spec.placement is empty {NULL_PLACEMENT}", E)],
    ),
    (
        "placement is null",
        bundle("  placement:\n"),
        [(B, 6, f"spec.placement is null {NULL_PLACEMENT}", E)],
    ),
    (
        "a placement clause is null",
        bundle("  placement:\n    clusters: [c1]\n    cel:\n"),
        [(B, 8, "spec.placement.cel is null (remove it or give it a value)", E)],
    ),
    (
        "clusterSelector is null",
        bundle("  placement:\n    clusterSelector: null\n"),
        [(B, 7, "spec.placement.clusterSelector is null (remove it or give it a value)", E)],
    ),
    ("an empty clusters list is fine", bundle("  placement:\n    clusters: []\n"), []),
    (
        "clusters names an unknown cluster",
        bundle("  placement:\n    clusters:\n      - c1\n      - gone-1\n"),
        [
            (
                B,
                9,
                'spec.placement.clusters[1]: no cluster named "gone-1" (a cluster file may have been removed)',
                W,
            )
        ],
    ),
    (
        "In without values",
        bundle(
            "  placement:\n    clusterSelector:\n      matchExpressions:\n        - {key: env, operator: In}\n"
        ),
        [
            (
                B,
                9,
                "spec.placement.clusterSelector.matchExpressions[0]: operator In needs a non-empty list of values",
                E,
            )
        ],
    ),
    (
        "NotIn with an empty values list",
        bundle(
            "  placement:\n    clusterSelector:\n      matchExpressions:\n"
            "        - key: env\n          operator: NotIn\n          values: []\n"
        ),
        [
            (
                B,
                11,
                "spec.placement.clusterSelector.matchExpressions[0]: operator NotIn needs a non-empty list of values",
                E,
            )
        ],
    ),
    (
        "Exists with values",
        bundle(
            "  placement:\n    clusterSelector:\n      matchExpressions:\n"
            "        - key: env\n          operator: Exists\n          values: [a]\n"
        ),
        [
            (
                B,
                11,
                "spec.placement.clusterSelector.matchExpressions[0]: operator Exists must not have values",
                E,
            )
        ],
    ),
    (
        "an unknown operator",
        bundle(
            "  placement:\n    clusterSelector:\n      matchExpressions:\n"
            "        - key: env\n          operator: in\n          values: [a]\n"
        ),
        [
            (
                B,
                10,
                'spec.placement.clusterSelector.matchExpressions[0].operator "in" is not one of In, NotIn, Exists, '
                'DoesNotExist (did you mean "In"?)',
                E,
            )
        ],
    ),
    (
        "matchLabels value is invalid",
        bundle("  placement:\n    clusterSelector:\n      matchLabels:\n        env: a b\n"),
        [
            (
                B,
                9,
                'spec.placement.clusterSelector.matchLabels.env value "a b" must be empty or alphanumeric with '
                "'-', '_' or '.' inside (starting and ending alphanumeric)",
                E,
            )
        ],
    ),
    (
        "a selector has an unknown field",
        bundle("  placement:\n    clusterSelector:\n      matchLabel: {env: prod}\n"),
        [
            (
                B,
                8,
                'unknown field "spec.placement.clusterSelector.matchLabel" (did you mean "matchLabels"?)',
                E,
            )
        ],
    ),
    # ---------------------------------------------------------------- spec.paths
    (
        "spec.paths climbs out with ..",
        bundle("  paths:\n    - ../base\n"),
        [(B, 7, 'spec.paths[0] "../base" contains ".."', E)],
    ),
    (
        "spec.paths is absolute",
        bundle("  paths: [/etc]\n"),
        [(B, 6, 'spec.paths[0] "/etc" is an absolute path', E)],
    ),
    (
        "spec.paths has a backslash",
        bundle("  paths: ['a\\b']\n"),
        [(B, 6, 'spec.paths[0] "a\\\\b" contains a backslash (use /)', E)],
    ),
    (
        "spec.paths has a NUL",
        bundle('  paths: ["a\\0b"]\n'),
        [(B, 6, 'spec.paths[0] "a\\u0000b" contains a NUL character', E)],
    ),
    (
        "spec.paths is a URL",
        bundle("  paths: ['https://example.com/x.yaml']\n"),
        [(B, 6, 'spec.paths[0] "https://example.com/x.yaml" is a URL or drive path, not a relative path', E)],
    ),
    (
        "spec.paths names something that does not exist",
        bundle("  paths: [cm.yaml, manifests/]\n"),
        [(B, 6, 'spec.paths[1] "manifests": no such file or folder in bundles/web/', E)],
    ),
    # ---------------------------------------------------------------- manifests
    (
        "a manifest document is not a mapping",
        {"bundles/web/cm.yaml": rb.configmap("web") + "---\n- a\n- b\n"},
        [
            (
                "bundles/web/cm.yaml",
                8,
                "document 2 is not a mapping (got a list); each document must be one Kubernetes object",
                E,
            )
        ],
    ),
    (
        "a manifest lacks apiVersion, kind or name",
        {"bundles/web/cm.yaml": "kind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {}\n"},
        [
            ("bundles/web/cm.yaml", 1, "document 1 has no apiVersion", E),
            ("bundles/web/cm.yaml", 4, "document 2 has no kind, no metadata.name", E),
        ],
    ),
    (
        "a JSON manifest is not an object",
        {"bundles/web/list.json": "[1, 2]"},
        [
            (
                "bundles/web/list.json",
                1,
                "document 1 is not a mapping (got a list); each document must be one Kubernetes object",
                E,
            )
        ],
    ),
    (
        "a JSON manifest is malformed",
        {"bundles/web/bad.json": '{"apiVersion": "v1",\n "kind": }'},
        [("bundles/web/bad.json", 2, "invalid JSON: Expecting value", E)],
    ),
    (
        "the same object is declared twice in one bundle",
        {"bundles/web/again.yaml": rb.configmap("web")},
        [
            (
                "bundles/web/cm.yaml",
                1,
                'ConfigMap/web is declared twice in bundle "web" (also at bundles/web/again.yaml:1)',
                E,
            )
        ],
    ),
    (
        "an explicit namespace equal to the bundle default is the same object",
        {
            **bundle("  namespace: app\n"),
            "bundles/web/cm.yaml": rb.configmap("web") + "---\n" + rb.configmap("web", namespace="app"),
        },
        [
            (
                "bundles/web/cm.yaml",
                8,
                'ConfigMap/app/web is declared twice in bundle "web" (also at bundles/web/cm.yaml:1)',
                E,
            )
        ],
    ),
    (
        "a nested fleet Bundle is not a manifest",
        {"bundles/web/sub/bundle.yaml": rb.bundle_yaml("sub")},
        [
            (
                "bundles/web/sub/bundle.yaml",
                1,
                "document 1 is a fleet Bundle, not a manifest (a bundle folder holds one bundle.yaml at its top)",
                E,
            )
        ],
    ),
    # ---------------------------------------------------------------- overrides
    (
        "a patch has both merge and json",
        bundle(
            """
              overrides:
                - placement: {clusters: [c1]}
                  patches:
                    - target: {kind: ConfigMap, name: web}
                      merge: {data: {key: y}}
                      json: [{op: remove, path: /data}]
            """
        ),
        [(B, 9, "spec.overrides[0].patches[0]: give exactly one of merge (RFC 7386) and json (RFC 6902)", E)],
    ),
    (
        "a patch has neither merge nor json",
        bundle(
            """
              overrides:
                - placement: {clusters: [c1]}
                  patches:
                    - target: {kind: ConfigMap}
            """
        ),
        [(B, 9, "spec.overrides[0].patches[0]: give exactly one of merge (RFC 7386) and json (RFC 6902)", E)],
    ),
    (
        "json is not a list of operations",
        bundle(
            """
              overrides:
                - placement: {clusters: [c1]}
                  patches:
                    - target: {kind: ConfigMap}
                      json: {op: remove, path: /data}
            """
        ),
        [
            (
                B,
                10,
                "spec.overrides[0].patches[0].json must be a non-empty list of RFC 6902 operations, not a mapping",
                E,
            )
        ],
    ),
    (
        "a json operation is unknown or incomplete",
        bundle(
            """
              overrides:
                - placement: {clusters: [c1]}
                  patches:
                    - target: {kind: ConfigMap}
                      json:
                        - {op: delete, path: /data}
                        - {op: replace, path: /data/key}
                        - {op: move, path: /data/b}
                        - {op: add, path: data, value: 1}
            """
        ),
        [
            (
                B,
                11,
                'spec.overrides[0].patches[0].json[0].op "delete" is not one of add, remove, replace, move, copy, test',
                E,
            ),
            (B, 12, "spec.overrides[0].patches[0].json[1]: replace needs value", E),
            (B, 13, "spec.overrides[0].patches[0].json[2]: move needs from", E),
            (
                B,
                14,
                'spec.overrides[0].patches[0].json[3].path "data" is not a JSON pointer ("" or starting with /)',
                E,
            ),
        ],
    ),
    (
        "an override has no placement",
        bundle(
            """
              overrides:
                - patches:
                    - target: {kind: ConfigMap}
                      merge: {data: {a: b}}
            """
        ),
        [
            (
                B,
                7,
                "spec.overrides[0].placement is missing (an override applies to the clusters it selects)",
                E,
            )
        ],
    ),
    (
        "an override placement is empty",
        bundle(
            """
              overrides:
                - placement: {}
                  patches:
                    - target: {kind: ConfigMap}
                      merge: {data: {a: b}}
            """
        ),
        [(B, 7, f"spec.overrides[0].placement is empty {NULL_PLACEMENT}", E)],
    ),
]


def _apply(changes: dict[str, str | bytes]) -> dict[str, str | bytes]:
    return {**BASE, **changes}


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_rule_reports_the_exact_path_line_and_message(
    files: dict[str, str | bytes], expected: list[tuple[str, int, str, model.Severity]]
) -> None:
    repo = parse(_apply(files))
    assert found(repo) == expected
    text = "\n".join(str(p) for p in repo.problems)
    assert "CANARY" not in text


def test_a_revision_without_clusters_or_bundles_is_a_warning() -> None:
    repo = parse({"README.md": "x"})
    assert found(repo) == [
        ("bundles", 1, "no bundle (bundles/NAME/bundle.yaml) in this revision", W),
        ("clusters", 1, "no cluster file (clusters/NAME.yaml) in this revision", W),
    ]
    repo = parse({k: v for k, v in BASE.items() if k.startswith("bundles/")}, base="deploy")
    assert found(repo) == [("deploy/clusters", 1, "no cluster file (clusters/NAME.yaml) in this revision", W)]


@pytest.mark.parametrize(
    "expression",
    [
        "cluster.name ==",
        'cluster.nme == "x"',
        "1 + 2",
        "cluster.labels.env == 'prod' &&\n  cluster.name.startsWith(",
    ],
)
def test_placement_cel_that_does_not_compile_is_reported_with_its_line_and_column(expression: str) -> None:
    indented = "\n".join("      " + line for line in expression.splitlines())
    repo = parse(_apply(bundle(f"  placement:\n    cel: |\n{indented}\n")))
    expected = [
        (
            B,
            7 + line,
            f"spec.placement.cel: invalid CEL at line {line}, column {column} of the expression: {message}",
            E,
        )
        for line, column, message in cel.check(expression + "\n")
    ]
    assert expected, "the CEL checker should find a problem"
    assert found(repo) == expected
    assert "web" in repo.broken_bundles


def test_valid_cel_passes_and_is_kept_on_the_placement() -> None:
    expr = "has(cluster.facts.tier) && cluster.facts.tier == 1 && !cluster.name.startsWith('legacy-')"
    repo = parse(_apply(bundle(f'  placement:\n    cel: "{expr}"\n')))
    assert repo.problems == ()
    placement = repo.bundles["web"].placement
    assert placement is not None and placement.cel == expr and placement.lines == {"cel": 7}


def test_a_url_carrying_a_password_or_a_credential_parameter_is_a_credential_field_named_without_its_value() -> (
    None
):
    body = rb.dedent(
        """
        apiVersion: fleet.dev/v1alpha1
        kind: Cluster
        metadata:
          name: c1
          annotations:
            endpoint: "https://admin:CANARY-1@k8s.example.com"
            hook: "https://hooks.example.com/x?team=a&token=CANARY-2"
            api: "https://api.example.com/v1?access_token=CANARY-3"
            db: "postgres://app:CANARY-4@db:5432/app"
            login: "https://example.com/login?password=CANARY-5"
            plain: "https://user@example.com/path?page=2"
        spec:
          facts: {links: ["https://ok.example.com", "ftp://u:CANARY-6@files"]}
        """
    )
    repo = parse({**BASE, C: body})
    assert found(repo) == [
        (C, 6, f'credential-looking field "metadata.annotations.endpoint": {CRED}', E),
        (C, 7, f'credential-looking field "metadata.annotations.hook": {CRED}', E),
        (C, 8, f'credential-looking field "metadata.annotations.api": {CRED}', E),
        (C, 9, f'credential-looking field "metadata.annotations.db": {CRED}', E),
        (C, 10, f'credential-looking field "metadata.annotations.login": {CRED}', E),
        (C, 13, f'credential-looking field "spec.facts.links[1]": {CRED}', E),
    ]
    assert "CANARY" not in "\n".join(str(p) for p in repo.problems)
