"""The sources step: a bundle's Kustomize overlay, Helm chart or SOPS-encrypted files -> plain manifests.

Owns: `expand` (for every placed bundle with ``spec.source`` or ``spec.decrypt``, the manifests each of its
clusters gets, as a `model.Expansion` the pure render layer then substitutes, overrides and marks like any
plain manifest), `Settings` (the helm program, the age identity, the limits of a run) and `Cache` (renders
kept by the content they read, across revisions). This is the I/O half of rendering; `fleet.core.render` stays
pure and takes the expansions as input. Does not: substitute, patch or mark objects (`fleet.core.render`), or
read git (the caller passes the revision's `model.Snapshot`). The reference for users is docs/sources.md.

How a bundle is rendered (docs/sources.md):

- Its clusters are grouped by the inputs they would give the renderer: ``${cluster.*}`` in the kustomize
  path, in the Helm values paths, in the content of the values files and in ``set`` values (without any,
  one group: one render per revision). Each group is a job whose key hashes everything the run reads (the
  files of the chart or every file the kustomization walk found, the substituted values, the tool's
  version); a key seen before is not run again, so a commit that does not touch a chart renders nothing.
  A bundle whose files, spec and placement did not change is not even looked at again.
- Jobs run off the event loop, at most `Settings.concurrency` processes at once, each in a private folder
  holding only the files it reads (decrypted ones on a memory file system), with a time limit, an output
  cap, no network and no plugins (`fleet.clients.sources.process`). Kustomize inputs are walked and checked first
  (`fleet.clients.sources.kustomize`), chart dependencies must be vendored (`fleet.clients.sources.helm`), SOPS files may
  name age keys only (`fleet.clients.sources.sops`).
- Any failure is a `model.Problem` for each cluster of the bundle it hits (PATH:LINE of the field or file
  at fault and the tool's own message, with every decrypted value replaced by ``<redacted>``), never an
  exception: the bundle is broken there, the rest of the fleet goes on. A failure that depends on a clock
  (a time limit) is not cached: the next revision tries again.
"""

from __future__ import annotations

from fleet.clients.sources.expansion import expand
from fleet.clients.sources.work import DEFAULT_MAX_OUTPUT, DEFAULT_TIMEOUT, Cache, MiB, Settings

__all__ = [
    "DEFAULT_MAX_OUTPUT",
    "DEFAULT_TIMEOUT",
    "Cache",
    "MiB",
    "Settings",
    "expand",
]
