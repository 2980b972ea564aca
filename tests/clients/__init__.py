"""Tests of fleet.clients: the kube client, git, the renderer programs, the state database."""
