"""The commands of the `fleet` program, one module per area; `fleet.cli` registers them all."""
