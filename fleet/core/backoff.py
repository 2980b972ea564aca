"""The one backoff rule of fleet: how long to wait after failures in a row.

Owns: `delay`: after the `attempt`-th failure in a row (1, 2, ...), `base` doubled once per further
failure (at most `max_doublings` times), capped at `cap`, and jittered to between half and all of that
(so the retries of many clients, clusters or receivers do not arrive together). Used by the kube client's
request retries, the watch's reconnects, the engine's fetch and cluster retries, notification delivery,
and (without jitter) drift repair's backoff from a fight with another writer.
Does not: sleep (callers wait the returned seconds their own way).
"""

from __future__ import annotations

import random
from collections.abc import Callable


def delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    max_doublings: int = 64,
    jitter: bool = True,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failure `attempt` (1 for the first): min(cap, base * 2**(attempt - 1)),
    times a random factor in [0.5, 1) unless `jitter` is False. No failure (`attempt` < 1): no wait."""
    if attempt < 1:
        return 0.0
    wait = min(cap, base * 2 ** min(attempt - 1, max_doublings))
    return wait * (0.5 + rng() / 2) if jitter else wait
