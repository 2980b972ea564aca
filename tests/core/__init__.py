"""Tests of fleet.core: the pure layers, in-process."""
