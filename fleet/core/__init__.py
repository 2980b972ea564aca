"""fleet's pure core: decisions over immutable values, no I/O (no network, git, disk or clock reads).

Every function here takes what it needs as arguments (times included) and returns new values, so the
controller can drive it from events and the tests can drive it without a server.
"""
