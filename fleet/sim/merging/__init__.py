"""The pure merge engines of the simulator: server-side apply, strategic merge patch, field ownership.

`ssa` applies configurations and records the managedFields of every write (with `structured`, the
structured merge, prune and compare of values under a schema, and `managedfields`, the entries' wire
form and capping); `fieldsets` is the FieldsV1 trie and its set algebra; `smp` is strategic merge patch.
Pure functions over plain dicts: nothing here stores, speaks HTTP or knows a cluster. The merge shape
of a kind comes from `fleet.sim.kinds.structure`.
"""
