"""SOPS-encrypted files: recognising them and what may decrypt them (pure: no I/O).

Owns: `file_format` (is a file SOPS-encrypted, and as what: YAML, JSON or dotenv), `foreign_keys` (the key
sources of a file other than age: refused, because SOPS would try them first and they reach a key service
over the network), `argv` (``sops decrypt`` reading stdin, its version check off so it never reaches the
internet) and `plaintext_values` (the decrypted values, so that no message ever repeats one). Does not: run
sops or hold the age identity (`fleet.clients.sources`).
"""

from __future__ import annotations

from typing import Any

from fleet.core import errors, repository, yamlsafe

# Key sources SOPS knows besides age; each one makes it call a key service (or gpg) before trying age.
FOREIGN = ("kms", "gcp_kms", "azure_kv", "hc_vault", "pgp")
MIN_SECRET = 4  # shorter decrypted values are not looked for in messages (they would match everywhere)


def file_format(rel: str, data: bytes) -> str | None:
    """``yaml``, ``json`` or ``dotenv`` when `data` is a file SOPS encrypted, else None."""
    if b"sops" not in data or b"ENC[" not in data:
        return None
    if rel.endswith(".env"):
        return "dotenv" if any(line.startswith(b"sops_mac=") for line in data.splitlines()) else None
    fmt = "json" if rel.endswith(".json") else "yaml"
    try:
        docs = yamlsafe.load_json(data, path=rel) if fmt == "json" else yamlsafe.load_yaml(data, path=rel)
    except errors.ValidationError:
        return None
    return fmt if any(repository.is_sops_document(d.data) for d in docs) else None


def _non_empty(value: Any) -> bool:
    return value not in (None, "", [], {})


def foreign_keys(rel: str, data: bytes, fmt: str) -> list[str]:
    """The key sources of an encrypted file other than age (``kms``, ``pgp`` ...), sorted."""
    found: set[str] = set()
    if fmt == "dotenv":
        for line in data.splitlines():
            for kind in FOREIGN:
                if line.startswith(f"sops_{kind}__".encode()):
                    found.add(kind)
        return sorted(found)
    docs = yamlsafe.load_json(data, path=rel) if fmt == "json" else yamlsafe.load_yaml(data, path=rel)
    for doc in docs:
        meta = doc.data.get("sops") if isinstance(doc.data, dict) else None
        if not isinstance(meta, dict):
            continue
        groups = [meta] + [g for g in (meta.get("key_groups") or []) if isinstance(g, dict)]
        for group in groups:
            for kind in FOREIGN:
                if _non_empty(group.get(kind)):
                    found.add(kind)
    return sorted(found)


def argv(sops: str, fmt: str) -> list[str]:
    """Decrypt stdin to stdout; never check for a newer version (that would reach the internet)."""
    return [sops, "--disable-version-check", "decrypt", "--input-type", fmt, "--output-type", fmt]


def plaintext_values(data: bytes, fmt: str) -> frozenset[str]:
    """Every decrypted text value of at least `MIN_SECRET` characters (to scrub them from messages)."""
    out: set[str] = set()
    if fmt == "dotenv":
        for line in data.decode("utf-8", errors="replace").splitlines():
            _key, eq, value = line.partition("=")
            if eq and len(value.strip()) >= MIN_SECRET:
                out.add(value.strip())
        return frozenset(out)
    try:
        docs = yamlsafe.load_json(data, path="-") if fmt == "json" else yamlsafe.load_yaml(data, path="-")
    except errors.ValidationError:
        return frozenset()
    stack: list[Any] = [d.data for d in docs]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and len(value) >= MIN_SECRET:
            out.add(value)
            out.update(line for line in value.splitlines() if len(line) >= MIN_SECRET)
    return frozenset(out)
