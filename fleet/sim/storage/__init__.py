"""The state of simulated clusters: objects, resourceVersions, history, watches.

`store.Cluster` is one cluster's state and its write path; `objects` is the stored form of objects and
events; `strategy` is what the server sets and keeps on a write (the real registry's strategy);
`watches` delivers committed events to open watches; `selectors` parses and matches label and field
selectors. Nothing here speaks HTTP (`fleet.sim.rest`) or merges objects (`fleet.sim.merging`).
"""
