"""Tests of fleet.cluster: one cluster's reads, rounds, diffs, watches and repairs, over HTTP against fleet sim."""
