"""Secrets the real API server refuses, refused the same way by `fleet sim`, over real HTTP.

Sources (Kubernetes 1.35): the JSON decoding of `[]byte` fields (Go encoding/json with
base64.StdEncoding: padding required, `illegal base64 data at input byte N`), wrapped by the create and
update handlers as `Secret in version "v1" cannot be handled as a Secret: ...` (apiserver handlers
rest.go transformDecodeError); the patch handlers' `patch: Invalid value` 422 (handlers/patch.go); the
field manager's `failed to convert new object (...) to proper version` for server-side apply
(managedfields structuredmerge.go, a 500 with an empty reason); pkg/apis/core/validation ValidateSecret
and ValidateSecretUpdate for typed secrets, data keys, total size and the immutable `type`.

Every test also checks that no secret value comes back in the response body.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

SECRETS = "/api/v1/namespaces/default/secrets"
APPLY = {"Content-Type": "application/apply-patch+yaml"}
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
STRATEGIC = {"Content-Type": "application/strategic-merge-patch+json"}

# Not base64: the '-' at offset 7 is outside the standard alphabet. Never to be echoed back.
LEAKY = "hunter2-TOPSECRET"
LEAKY_OFFSET = 7
DECODE_MESSAGE = (
    f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte {LEAKY_OFFSET}'
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(name: str, *, data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}
    if data is not None:
        body["data"] = data
    body.update(extra)
    return body


def make(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(SECRETS, json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def assert_status(r: httpx.Response, code: int, reason: str, *secrets: str) -> dict[str, Any]:
    assert r.status_code == code, r.text
    body: dict[str, Any] = r.json()
    assert body["kind"] == "Status"
    assert body.get("reason", "") == reason and body.get("reason") != ""  # an empty reason is left out
    for value in secrets:
        assert value not in r.text
    return body


def causes(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["reason"], c.get("field", ""), c["message"]) for c in body["details"]["causes"]]


def gone(client: httpx.Client, name: str) -> bool:
    return client.get(f"{SECRETS}/{name}").status_code == 404


# ----- []byte decoding ----------------------------------------------------------------------------


def test_a_secret_whose_data_is_not_base64_is_refused_at_decode_time_without_echoing_it(
    client: httpx.Client,
) -> None:
    r = client.post(SECRETS, json=secret("s", data={"password": LEAKY}))
    body = assert_status(r, 400, "BadRequest", LEAKY, "hunter2")
    assert body["message"] == DECODE_MESSAGE
    assert gone(client, "s")


def test_a_yaml_body_with_bad_base64_gets_the_same_decode_error(client: httpx.Client) -> None:
    doc = f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  password: {LEAKY}\n"
    r = client.post(SECRETS, content=doc, headers={"Content-Type": "application/yaml"})
    body = assert_status(r, 400, "BadRequest", LEAKY, "hunter2")
    assert body["message"] == DECODE_MESSAGE


@pytest.mark.parametrize(
    ("value", "offset"),
    [
        ("c2VjcmV0IQ", 8),  # padding is required (standard encoding, not raw)
        ("c2VjcmV0IQ=", 11),  # "==" expected, input ends after the first "="
        ("c2VjcmV0IQ==x", 12),  # trailing garbage after the padding
        ("c2Vj cmV0", 4),  # a space is not skipped (only \r and \n are)
        ("c2VjcmV0_w==", 8),  # URL-safe alphabet is not the standard one
        ("Y", 0),
    ],
)
def test_the_decode_error_names_the_offset_go_reports(client: httpx.Client, value: str, offset: int) -> None:
    r = client.post(SECRETS, json=secret("s", data={"k": value}))
    body = assert_status(r, 400, "BadRequest", value)
    assert body["message"].endswith(f"illegal base64 data at input byte {offset}")


def test_data_the_go_decoder_accepts_is_stored_and_returned_in_canonical_base64(client: httpx.Client) -> None:
    # Newlines are skipped and non-zero trailing bits ignored by Go's decoder; the server re-encodes.
    made = make(client, secret("s", data={"a": "YWJj\nZA==", "b": "YWJjZB==", "c": ""}))
    assert made["data"] == {"a": "YWJjZA==", "b": "YWJjZA==", "c": ""}
    assert client.get(f"{SECRETS}/s").json()["data"] == made["data"]


def test_an_update_with_bad_base64_is_refused_and_leaves_the_secret_alone(client: httpx.Client) -> None:
    made = make(client, secret("s", data={"password": b64("old")}))
    made["data"]["password"] = LEAKY
    r = client.put(f"{SECRETS}/s", json=made)
    body = assert_status(r, 400, "BadRequest", LEAKY, "hunter2")
    assert body["message"] == DECODE_MESSAGE
    assert client.get(f"{SECRETS}/s").json()["data"] == {"password": b64("old")}


@pytest.mark.parametrize(
    ("headers", "patch", "detail"),
    [
        (MERGE, {"data": {"password": LEAKY}}, ""),
        (JSON_PATCH, [{"op": "replace", "path": "/data/password", "value": LEAKY}], ""),
        (STRATEGIC, {"data": {"password": LEAKY}}, "error decoding from json: "),
    ],
    ids=["merge", "json", "strategic"],
)
def test_a_patch_that_makes_data_not_base64_gets_the_patch_invalid_422_without_the_object(
    client: httpx.Client, headers: dict[str, str], patch: Any, detail: str
) -> None:
    make(client, secret("s", data={"password": b64("old")}))
    r = client.patch(f"{SECRETS}/s", content=json.dumps(patch), headers=headers)
    body = assert_status(r, 422, "Invalid", LEAKY, "hunter2", b64("old"))
    message = f"Invalid value: {detail}illegal base64 data at input byte {LEAKY_OFFSET}"
    assert body["message"] == f' "" is invalid: patch: {message}'
    assert causes(body) == [("FieldValueInvalid", "patch", message)]
    assert client.get(f"{SECRETS}/s").json()["data"] == {"password": b64("old")}


@pytest.mark.parametrize("exists", [False, True], ids=["create", "update"])
def test_a_server_side_apply_with_bad_base64_fails_as_the_field_manager_does(
    client: httpx.Client, exists: bool
) -> None:
    if exists:
        make(client, secret("s", data={"password": b64("old")}))
    config = secret("s", data={"password": LEAKY})
    config["metadata"]["namespace"] = "default"
    # force: the field belongs to the creator, and a conflict is reported before the conversion fails.
    params = {"fieldManager": "fleet", "force": "true"}
    r = client.patch(f"{SECRETS}/s", params=params, content=json.dumps(config), headers=APPLY)
    body = assert_status(r, 500, "", LEAKY, "hunter2", b64("old"))
    assert body["message"] == (
        "failed to convert new object (default/s; /v1, Kind=Secret) to proper version: unable to convert "
        "unstructured object to /v1, Kind=Secret: error decoding from json: illegal base64 data at input "
        f"byte {LEAKY_OFFSET}"
    )
    if exists:
        assert client.get(f"{SECRETS}/s").json()["data"] == {"password": b64("old")}
    else:
        assert gone(client, "s")


def test_string_data_is_folded_into_data_and_never_decoded_as_base64(client: httpx.Client) -> None:
    made = make(client, secret("s", data={"a": b64("x")}, stringData={"b": LEAKY, "a": "y"}))
    assert made["data"] == {"a": b64("y"), "b": b64(LEAKY)}
    assert "stringData" not in made


# ----- typed secrets (ValidateSecret) -------------------------------------------------------------


def test_a_tls_secret_needs_both_tls_crt_and_tls_key(client: httpx.Client) -> None:
    r = client.post(SECRETS, json=secret("t", type="kubernetes.io/tls", data={"ca.crt": b64("hunter2")}))
    body = assert_status(r, 422, "Invalid", b64("hunter2"), "hunter2")
    assert causes(body) == [
        ("FieldValueRequired", "data[tls.crt]", "Required value"),
        ("FieldValueRequired", "data[tls.key]", "Required value"),
    ]
    assert (
        body["message"]
        == 'Secret "t" is invalid: [data[tls.crt]: Required value, data[tls.key]: Required value]'
    )
    assert body["details"]["kind"] == "Secret" and body["details"]["name"] == "t"
    r = client.post(SECRETS, json=secret("t", type="kubernetes.io/tls", data={"tls.crt": b64("c")}))
    assert causes(assert_status(r, 422, "Invalid")) == [
        ("FieldValueRequired", "data[tls.key]", "Required value")
    ]
    made = make(client, secret("t", type="kubernetes.io/tls", stringData={"tls.crt": "c", "tls.key": "k"}))
    assert sorted(made["data"]) == ["tls.crt", "tls.key"]


def test_a_dockerconfigjson_secret_needs_valid_json_and_the_error_redacts_it(client: httpx.Client) -> None:
    kind = "kubernetes.io/dockerconfigjson"
    r = client.post(SECRETS, json=secret("d", type=kind, data={}))
    assert causes(assert_status(r, 422, "Invalid")) == [
        ("FieldValueRequired", "data[.dockerconfigjson]", "Required value")
    ]
    broken = '{"auths": {"r.example": {"auth": "hunter2"}'
    r = client.post(SECRETS, json=secret("d", type=kind, stringData={".dockerconfigjson": broken}))
    body = assert_status(r, 422, "Invalid", "hunter2", b64(broken))
    assert causes(body) == [
        (
            "FieldValueInvalid",
            "data[.dockerconfigjson]",
            'Invalid value: "<secret contents redacted>": unexpected end of JSON input',
        )
    ]
    r = client.post(SECRETS, json=secret("d", type=kind, stringData={".dockerconfigjson": "hunter2"}))
    body = assert_status(r, 422, "Invalid", "hunter2")
    assert causes(body)[0][2].endswith("invalid character 'h' looking for beginning of value")
    r = client.post(SECRETS, json=secret("d", type=kind, stringData={".dockerconfigjson": '["hunter2"]'}))
    body = assert_status(r, 422, "Invalid", "hunter2")
    assert causes(body)[0][2].endswith(
        "json: cannot unmarshal array into Go value of type map[string]interface {}"
    )
    make(client, secret("d", type=kind, stringData={".dockerconfigjson": '{"auths": {}}'}))


def test_a_dockercfg_secret_needs_the_dockercfg_key(client: httpx.Client) -> None:
    r = client.post(SECRETS, json=secret("d", type="kubernetes.io/dockercfg", data={"x": b64("hunter2")}))
    body = assert_status(r, 422, "Invalid", b64("hunter2"))
    assert causes(body) == [("FieldValueRequired", "data[.dockercfg]", "Required value")]
    make(client, secret("d", type="kubernetes.io/dockercfg", stringData={".dockercfg": "{}"}))


def test_a_basic_auth_secret_needs_a_username_or_a_password(client: httpx.Client) -> None:
    r = client.post(
        SECRETS, json=secret("b", type="kubernetes.io/basic-auth", data={"token": b64("hunter2")})
    )
    body = assert_status(r, 422, "Invalid", b64("hunter2"))
    assert causes(body) == [
        ("FieldValueRequired", "data[username]", "Required value"),
        ("FieldValueRequired", "data[password]", "Required value"),
    ]
    make(client, secret("b", type="kubernetes.io/basic-auth", stringData={"password": ""}))


def test_an_ssh_auth_secret_needs_a_non_empty_private_key(client: httpx.Client) -> None:
    r = client.post(SECRETS, json=secret("k", type="kubernetes.io/ssh-auth", data={"ssh-privatekey": ""}))
    assert causes(assert_status(r, 422, "Invalid")) == [
        ("FieldValueRequired", "data[ssh-privatekey]", "Required value")
    ]
    make(client, secret("k", type="kubernetes.io/ssh-auth", stringData={"ssh-privatekey": "hunter2"}))


def test_a_service_account_token_secret_needs_the_service_account_name_annotation(
    client: httpx.Client,
) -> None:
    kind = "kubernetes.io/service-account-token"
    r = client.post(SECRETS, json=secret("sa", type=kind, data={"token": b64("hunter2")}))
    body = assert_status(r, 422, "Invalid", b64("hunter2"))
    assert causes(body) == [
        ("FieldValueRequired", "metadata.annotations[kubernetes.io/service-account.name]", "Required value")
    ]
    ok = secret("sa", type=kind)
    ok["metadata"]["annotations"] = {"kubernetes.io/service-account.name": "builder"}
    make(client, ok)


def test_data_keys_must_be_config_keys(client: httpx.Client) -> None:
    r = client.post(SECRETS, json=secret("s", data={"bad key": b64("hunter2"), "..x": b64("hunter2")}))
    body = assert_status(r, 422, "Invalid", b64("hunter2"))
    key_rule = (
        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
        "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
    )
    assert causes(body) == [
        ("FieldValueInvalid", "data[bad key]", f'Invalid value: "bad key": {key_rule}'),
        ("FieldValueInvalid", "data[..x]", "Invalid value: \"..x\": must not start with '..'"),
    ]
    r = client.post(SECRETS, json=secret("s", stringData={"a/b": "hunter2"}))
    assert [c[1] for c in causes(assert_status(r, 422, "Invalid", "hunter2"))] == ["data[a/b]"]


def test_the_decoded_data_may_total_at_most_one_mebibyte(client: httpx.Client) -> None:
    limit = 1024 * 1024
    half = "A" * (limit // 2)
    make(client, secret("fits", stringData={"a": half, "b": half}))
    r = client.post(SECRETS, json=secret("big", stringData={"a": half, "b": half + "A"}))
    body = assert_status(r, 422, "Invalid", half[:64])
    assert causes(body) == [("FieldValueTooLong", "data", f"Too long: may not be more than {limit} bytes")]
    assert gone(client, "big")


# ----- updates (ValidateSecretUpdate) -------------------------------------------------------------


def test_the_type_of_a_secret_cannot_change(client: httpx.Client) -> None:
    made = make(client, secret("s", data={"tls.crt": b64("c"), "tls.key": b64("hunter2")}))
    assert made["type"] == "Opaque"
    made["type"] = "kubernetes.io/tls"
    r = client.put(f"{SECRETS}/s", json=made)
    body = assert_status(r, 422, "Invalid", b64("hunter2"))
    assert causes(body) == [
        ("FieldValueInvalid", "type", 'Invalid value: "kubernetes.io/tls": field is immutable')
    ]
    r = client.patch(f"{SECRETS}/s", content=json.dumps({"type": "kubernetes.io/tls"}), headers=MERGE)
    assert causes(assert_status(r, 422, "Invalid", b64("hunter2")))[0][1] == "type"
    config = secret("s", type="kubernetes.io/tls")
    params = {"fieldManager": "fleet", "force": "true"}  # the creator owns the defaulted `type`
    r = client.patch(f"{SECRETS}/s", params=params, content=json.dumps(config), headers=APPLY)
    assert causes(assert_status(r, 422, "Invalid", b64("hunter2")))[0][1] == "type"
    assert client.get(f"{SECRETS}/s").json()["type"] == "Opaque"


def test_an_immutable_secret_keeps_its_data_and_stays_immutable(client: httpx.Client) -> None:
    make(client, secret("s", data={"k": b64("hunter2")}, immutable=True))
    r = client.patch(f"{SECRETS}/s", content=json.dumps({"data": {"k": b64("other")}}), headers=MERGE)
    body = assert_status(r, 422, "Invalid", b64("hunter2"), b64("other"))
    assert causes(body) == [
        ("FieldValueForbidden", "data", "Forbidden: field is immutable when `immutable` is set")
    ]
    r = client.patch(f"{SECRETS}/s", content=json.dumps({"immutable": False}), headers=MERGE)
    assert causes(assert_status(r, 422, "Invalid")) == [
        ("FieldValueForbidden", "immutable", "Forbidden: field is immutable when `immutable` is set")
    ]
    r = client.patch(f"{SECRETS}/s", content=json.dumps({"metadata": {"labels": {"a": "b"}}}), headers=MERGE)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("path", "config", "gvk"),
    [
        (
            "/api/v1/namespaces/default/configmaps/b",
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "b", "namespace": "default"},
                "binaryData": {"k": LEAKY},
            },
            "default/b; /v1, Kind=ConfigMap",
        ),
        (
            # A []byte field three references deep (APIService -> APIServiceSpec -> caBundle).
            "/apis/apiregistration.k8s.io/v1/apiservices/v1.bytes.example.com",
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": "v1.bytes.example.com"},
                "spec": {
                    "group": "bytes.example.com",
                    "version": "v1",
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                    "service": {"namespace": "default", "name": "api"},
                    "caBundle": LEAKY,
                },
            },
            "/v1.bytes.example.com; apiregistration.k8s.io/v1, Kind=APIService",
        ),
    ],
    ids=["configmap-binarydata", "apiservice-cabundle"],
)
def test_every_kind_with_a_byte_field_fails_a_server_side_apply_that_is_not_base64(
    client: httpx.Client, path: str, config: dict[str, Any], gvk: str
) -> None:
    r = client.patch(path, params={"fieldManager": "fleet"}, content=json.dumps(config), headers=APPLY)
    body = assert_status(r, 500, "", LEAKY, "hunter2")
    assert body["message"] == (
        f"failed to convert new object ({gvk}) to proper version: unable to convert unstructured object to "
        f"{gvk.split('; ', 1)[1]}: error decoding from json: illegal base64 data at input byte {LEAKY_OFFSET}"
    )
    assert client.get(path).status_code == 404
