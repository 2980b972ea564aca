"""fleet's I/O clients: how fleet talks to the world outside the process.

Owns: the Kubernetes API client (`kube`, the only module that imports kr8s), git through pygit2
(`source`), the renderer programs a bundle's Kustomize, Helm or SOPS source runs (`sources`, the I/O half
of rendering), the SQLite state database of `fleet serve` (`statedb`) and the TLS settings shared by every
client (`tls`). Each client turns its failures into `fleet.core.errors` and has a timeout on every call.
Does not: decide anything about clusters or bundles (fleet.core), or run a reconcile (fleet.cluster).
Imports only fleet.core.
"""
