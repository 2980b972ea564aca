"""Tests of fleet.cli: the `fleet` program's commands, options and output."""
