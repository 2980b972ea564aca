"""What a simulated cluster knows about the kinds it serves, built-in and custom; pure, no cluster state.

`types` is the table of kinds and the per-cluster registry CRDs extend; `schemas` loads the built-in
schemas of kubernetes-validate; `structure` compiles a schema into the merge shape the merge engines
need; `defaults` defaults and normalises built-in objects; `validation` checks them with the real
server's messages; `allocation` hands out Service addresses and node ports; `customresources` does all
of that for CRDs and their custom resources, from the CRD's schema.
"""
