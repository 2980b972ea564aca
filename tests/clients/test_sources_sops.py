"""spec.decrypt: sops: files encrypted by the real sops for age keys made here with pyrage, decrypted with
the identity of --sops-age-key-file / SOPS_AGE_KEY_FILE, never shown (issue 18)."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.clients import sources
from tests.support import repository_builders as rb
from tests.support import sources as ss

# Every test here starts processes (kubectl, python -m fleet.cli, sops): `slow`, outside the fast inner loop.
pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-staple"
SECRET = ss.dump(
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "stringData": {"password": PASSWORD}}
)
CONFIG = ss.dump(
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db-config"}, "data": {"a": "1"}}
)


def files(encrypted: str, *, decrypt: bool = True) -> dict[str, str | bytes]:
    spec = (
        "  namespace: data\n"
        + ("  decrypt: sops\n" if decrypt else "")
        + "  placement: {clusterSelector: {}}\n"
    )
    return {
        "clusters/eu-1.yaml": ss.cluster("eu-1", env="prod"),
        "bundles/db/bundle.yaml": ss.bundle("db", spec),
        "bundles/db/secret.yaml": encrypted,
        "bundles/db/config.yaml": CONFIG,
        "bundles/other/bundle.yaml": ss.bundle("other", "  placement: {clusterSelector: {}}\n"),
        "bundles/other/cm.yaml": ss.dump(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}, "data": {"b": "2"}}
        ),
    }


def test_a_sops_file_decrypts_with_the_right_age_key_and_joins_the_plain_manifests(tmp_path: Path) -> None:
    recipient = ss.age_identity(tmp_path / "key.txt")
    encrypted = ss.sops_encrypt(SECRET, recipient=recipient, regex="^(data|stringData)$")
    assert PASSWORD not in encrypted
    cache = sources.Cache()
    out = ss.expand(
        files(encrypted), settings=sources.Settings(age_key_file=str(tmp_path / "key.txt")), cache=cache
    )
    assert out.errors == {}
    objects = out.objects("db", "eu-1")
    assert sorted(objects) == ["ConfigMap/db-config", "Secret/db"]
    assert objects["Secret/db"]["stringData"] == {"password": PASSWORD}
    assert "sops" not in objects["Secret/db"]
    assert ss.started(cache) == {"sops": 1}
    again = ss.expand(
        files(encrypted), settings=sources.Settings(age_key_file=str(tmp_path / "key.txt")), cache=cache
    )
    assert ss.started(cache) == {"sops": 1}  # the same ciphertext is not decrypted twice
    assert again.objects("db", "eu-1")["Secret/db"]["stringData"] == {"password": PASSWORD}


def test_the_wrong_key_names_the_file_and_never_the_content(tmp_path: Path) -> None:
    recipient = ss.age_identity(tmp_path / "right.txt")
    ss.age_identity(tmp_path / "wrong.txt")
    encrypted = ss.sops_encrypt(SECRET, recipient=recipient)
    out = ss.expand(files(encrypted), settings=sources.Settings(age_key_file=str(tmp_path / "wrong.txt")))
    message = out.errors[("db", "eu-1")]
    assert message.startswith("bundles/db/secret.yaml:1: cannot decrypt with the age identity of "), message
    assert "no identity in it matches the file's recipients" in message
    assert PASSWORD not in message and "ENC[" not in message and "AGE-SECRET-KEY" not in message
    assert ("other", "eu-1") in out.desired  # the rest of the fleet is unaffected


def test_without_a_key_the_error_says_how_to_give_one(tmp_path: Path) -> None:
    recipient = ss.age_identity(tmp_path / "key.txt")
    out = ss.expand(files(ss.sops_encrypt(SECRET, recipient=recipient)))
    assert out.errors[("db", "eu-1")] == (
        "bundles/db/secret.yaml:1: cannot decrypt (spec.decrypt: sops): no age identity: pass "
        "--sops-age-key-file FILE or set SOPS_AGE_KEY_FILE (never kept in the repository)"
    )


def test_an_encrypted_file_in_a_bundle_without_decrypt_is_an_error_not_applied_ciphertext(
    tmp_path: Path,
) -> None:
    recipient = ss.age_identity(tmp_path / "key.txt")
    out = ss.expand(files(ss.sops_encrypt(SECRET, recipient=recipient), decrypt=False))
    assert "db" in out.repo.broken_bundles
    assert [str(p) for p in out.repo.errors] == [
        "bundles/db/secret.yaml:1: is SOPS-encrypted: set spec.decrypt: sops in bundle.yaml to decrypt it "
        "(fleet never applies ciphertext)"
    ]


def test_a_file_also_encrypted_for_a_key_service_is_refused_before_sops_runs(tmp_path: Path) -> None:
    recipient = ss.age_identity(tmp_path / "key.txt")
    encrypted = ss.sops_encrypt(SECRET, recipient=recipient)
    # The metadata is outside the MAC: add a KMS key as a team sharing a file with a cloud key would have.
    with_kms = encrypted.replace(
        "sops:\n", "sops:\n    kms:\n        - arn: arn:aws:kms:eu-west-1:111122223333:key/abc\n", 1
    )
    cache = sources.Cache()
    out = ss.expand(
        files(with_kms), settings=sources.Settings(age_key_file=str(tmp_path / "key.txt")), cache=cache
    )
    assert out.errors[("db", "eu-1")] == (
        "bundles/db/secret.yaml:1: is encrypted for kms besides age: fleet decrypts with age keys only and "
        "never calls a key service (re-encrypt it for age recipients only)"
    )
    assert ss.started(cache) == {}


def test_a_kustomize_secret_generator_reads_an_encrypted_env_file(tmp_path: Path) -> None:
    recipient = ss.age_identity(tmp_path / "key.txt")
    env = ss.sops_encrypt(f"DB_PASSWORD={PASSWORD}\n", recipient=recipient, fmt="dotenv")
    repo = {
        "clusters/eu-1.yaml": ss.cluster("eu-1", env="prod"),
        "bundles/app/bundle.yaml": ss.bundle(
            "app",
            "  decrypt: sops\n  source:\n    kustomize: {path: deploy}\n  placement: {clusterSelector: {}}\n",
        ),
        "bundles/app/deploy/kustomization.yaml": "secretGenerator:\n- name: db\n  envs: [db.env]\n",
        "bundles/app/deploy/db.env": env,
    }
    out = ss.expand(repo, settings=sources.Settings(age_key_file=str(tmp_path / "key.txt")))
    assert out.errors == {}
    secret = next(o for k, o in out.objects("app", "eu-1").items() if k.startswith("Secret/db-"))
    assert base64.b64decode(secret["data"]["DB_PASSWORD"]).decode() == PASSWORD


def fleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_fleet_render_redacts_the_decrypted_secret_unless_asked_and_takes_the_key_from_the_environment(
    tmp_path: Path,
) -> None:
    recipient = ss.age_identity(tmp_path / "key.txt")
    rb.write_files(tmp_path / "repo", files(ss.sops_encrypt(SECRET, recipient=recipient)))
    key = str(tmp_path / "key.txt")
    shown = fleet(
        "render", str(tmp_path / "repo"), "--cluster", "eu-1", "--bundle", "db", "--sops-age-key-file", key
    )
    assert shown.returncode == 0, shown.stderr
    assert "password: <redacted>" in shown.stdout and PASSWORD not in shown.stdout + shown.stderr
    revealed = fleet(
        "render",
        str(tmp_path / "repo"),
        "--cluster",
        "eu-1",
        "--bundle",
        "db",
        "--show-secrets",
        env={"SOPS_AGE_KEY_FILE": key},
    )
    assert revealed.returncode == 0, revealed.stderr
    assert f"password: {PASSWORD}" in revealed.stdout
    valid = fleet("validate", str(tmp_path / "repo"), env={"SOPS_AGE_KEY_FILE": key})
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert valid.stdout.splitlines()[-1] == "1 clusters, 2 bundles, 3 objects"


def test_a_key_file_without_an_age_identity_is_refused_at_start_without_showing_it(tmp_path: Path) -> None:
    (tmp_path / "key.txt").write_text("hunter2-not-a-key\n")
    rb.write_files(tmp_path / "repo", files(CONFIG))
    out = fleet(
        "render",
        str(tmp_path / "repo"),
        "--cluster",
        "eu-1",
        "--sops-age-key-file",
        str(tmp_path / "key.txt"),
    )
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"error: --sops-age-key-file {tmp_path / 'key.txt'}: line 1 is not an age identity (AGE-SECRET-KEY-1...)"
    )
