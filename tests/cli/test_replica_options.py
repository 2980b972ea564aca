"""`fleet serve`'s replica options (docs/scaling.md) are checked at start like every other: a bad value,
or one given without `--management-kubeconfig`, ends with exit 2 naming the option, nothing created."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_cli_options import invoke, serve_args  # noqa: F401  (a fixture)

MANAGED = ["--management-kubeconfig", "/nonexistent/management"]

BAD = [
    (["--shards", "8"], "error: --shards: only with --management-kubeconfig"),
    (["--management-context", "mgmt"], "error: --management-context: only with --management-kubeconfig"),
    (["--lease-duration", "20s"], "error: --lease-duration: only with --management-kubeconfig"),
    ([*MANAGED, "--shards", "0"], "error: --shards: the number of shards must be a whole number from 1"),
    ([*MANAGED, "--shards", "5000"], "error: --shards: the number of shards must be a whole number from 1"),
    ([*MANAGED, "--lease-retry-period", "nan"], "error: --lease-retry-period"),
    ([*MANAGED, "--lease-duration", "10s"], "must end at least 1s before the lease duration"),
    ([*MANAGED, "--lease-duration", "15.5s"], "must be whole seconds"),
    ([*MANAGED, "--lease-retry-period", "9s"], "must be well under the renew deadline"),
    ([*MANAGED, "--management-context", ""], "error: --management-context: empty"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_a_bad_replica_option_is_refused_at_start_naming_it(
    serve_args: list[str],  # noqa: F811
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    code, out = invoke([*serve_args, *args])
    assert code == 2, out
    assert message in " ".join(out.split()), out
    assert "kubeconfig not found" not in out
    assert not (tmp_path / "state").exists(), "nothing may be created before the options are checked"
