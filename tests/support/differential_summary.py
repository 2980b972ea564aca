"""The one line a test run prints about its differential cases, summed over pytest-xdist workers.

Owns: the outcomes of a process's differential cases (`record`: "agree", "known" or "differ"); on a
pytest-xdist worker, handing them to the controller when the worker's session ends (`workeroutput`), and
on the controller, adding up every worker's (`pytest_testnodedown`); and the line, printed once at the
end of the run by the process that writes the terminal summary (the controller, or the only process):
``differential: N cases on the sim and the real API server: A agree, K known differences, D differ``
(docs/sim.md "Differential tests").

Does not: run or compare cases (tests/sim/conftest.py, tests/support/differential.py). A plugin: the
root conftest (tests/conftest.py) loads it, so that the controller, which collects no test, has it too.
"""

from __future__ import annotations

from typing import Any

import pytest

OUTCOMES = ("agree", "known", "differ")
_RESULTS = pytest.StashKey[list[tuple[str, str]]]()  # (node id, outcome) of this process, or summed
_WORKER_OUTPUT = "differential"


def record(config: pytest.Config, nodeid: str, outcome: str) -> None:
    """One differential case's outcome in this process."""
    if outcome not in OUTCOMES:
        raise ValueError(f"{nodeid}: outcome {outcome!r} is none of {OUTCOMES}")
    config.stash.setdefault(_RESULTS, []).append((nodeid, outcome))


def line(results: list[tuple[str, str]]) -> str:
    counts = {k: sum(1 for _, o in results if o == k) for k in OUTCOMES}
    return (
        f"differential: {len(results)} cases on the sim and the real API server: {counts['agree']} agree, "
        f"{counts['known']} known differences, {counts['differ']} differ"
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput: dict[str, Any] | None = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: sent to the controller as the worker ends
        workeroutput[_WORKER_OUTPUT] = [list(r) for r in session.config.stash.get(_RESULTS, [])]


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's; on the controller, once per worker that ended
def pytest_testnodedown(node: Any, error: object) -> None:
    sent = getattr(node, "workeroutput", None) or {}
    results = node.config.stash.setdefault(_RESULTS, [])
    results.extend((str(nodeid), str(outcome)) for nodeid, outcome in sent.get(_WORKER_OUTPUT, []))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    config = terminalreporter.config
    results = config.stash.get(_RESULTS, [])
    if results and not hasattr(config, "workerinput"):  # a worker's terminal is nobody's
        terminalreporter.write_line(line(results))
