"""The fencing rule (fleet.core.fencing): a stale owner of a shard writes and prunes nothing."""

from __future__ import annotations

import pytest

from fleet.core import fencing

WHERE = "ConfigMap/fleet-system/fleet-inventory-web"


def f(epoch: int, lease: str = "fleet-shard-7") -> fencing.Fence:
    return fencing.Fence(lease=lease, epoch=epoch)


def test_a_fence_reads_as_lease_at_epoch() -> None:
    assert str(f(12)) == "fleet-shard-7@12"
    assert fencing.Fence.parse("fleet-shard-7@12") == f(12)


@pytest.mark.parametrize("text", ["", "fleet-shard-7", "fleet-shard-7@0", "fleet-shard-7@x", "A@1", "a@1@2"])
def test_a_fence_that_is_not_lease_at_epoch_is_refused_saying_so(text: str) -> None:
    with pytest.raises(ValueError, match="is not <lease name>@<epoch>"):
        fencing.Fence.parse(text)


def test_a_newer_epoch_of_the_same_lease_fences_an_older_writer_out() -> None:
    j = fencing.judge(f(8), f(7), where=WHERE)
    assert j.verdict is fencing.Verdict.STALE and j.above == 8
    assert j.message == (
        f"{WHERE}: fenced: written by a newer owner of shard lease fleet-shard-7 (epoch 8); "
        "this replica holds epoch 7 and writes and prunes nothing here"
    )


@pytest.mark.parametrize("found", [None, 3, 7])
def test_the_same_or_an_older_epoch_or_none_lets_the_holder_write_its_own_fence(found: int | None) -> None:
    j = fencing.judge(None if found is None else f(found), f(7), where=WHERE)
    assert (j.verdict, j.fence) == (fencing.Verdict.WRITE, f(7))


def test_a_fence_of_another_lease_was_written_under_another_shard_count_and_is_replaced() -> None:
    j = fencing.judge(f(40, lease="fleet-shard-39"), f(2), where=WHERE)
    assert (j.verdict, j.fence) == (fencing.Verdict.WRITE, f(2))


def test_a_writer_without_a_lease_writes_and_keeps_the_fence_it_found() -> None:
    assert fencing.judge(f(9), None, where=WHERE) == fencing.Judgement(fencing.Verdict.WRITE, fence=f(9))
    assert fencing.judge(None, None, where=WHERE) == fencing.Judgement(fencing.Verdict.WRITE, fence=None)
