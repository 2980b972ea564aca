"""Tests of fleet.controller: the HTTP API, webhook, telemetry, audit trail and the engine's decisions."""
