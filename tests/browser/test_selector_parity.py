"""The page's label selector filter agrees with fleet's own Kubernetes selector code (`fleet.core.selectors`)
on what parses and on what matches, over many generated selectors and label sets.
"""

from __future__ import annotations

import json
import random
from typing import Any

from fleet.core import errors, selectors
from tests.browser import harness, statusdocs
from tests.browser.statusserver import StatusServer

KEYS = ["env", "region", "tier", "example.com/team", "legacy"]
VALUES = ["prod", "eu", "us", "1", "a_b", ""]


def random_requirement(rng: random.Random) -> str:
    key = rng.choice(KEYS)
    form = rng.randrange(7)
    pad = rng.choice(["", " "])
    if form == 0:
        return key
    if form == 1:
        return f"!{key}"
    if form in (2, 3, 4):
        op = ["=", "==", "!="][form - 2]
        return f"{key}{pad}{op}{pad}{rng.choice(VALUES)}"
    values = ",".join(rng.sample(VALUES, rng.randint(1, 3)))
    return f"{key} {'in' if form == 5 else 'notin'} ({values})"


def random_text(rng: random.Random) -> str:
    text = ",".join(random_requirement(rng) for _ in range(rng.randint(0, 3)))
    if rng.random() < 0.15:  # damage it: both sides must then refuse it
        i = rng.randrange(len(text) + 1)
        text = text[:i] + rng.choice(["(", ")", ",", "=", "!", " in ", "%"]) + text[i:]
    return text


def python_verdict(text: str, labels: dict[str, str]) -> Any:
    try:
        parsed = selectors.parse(text)
    except errors.FleetError:
        return "invalid"
    return selectors.matches(parsed, labels)


def test_the_page_filter_and_fleet_selectors_agree(
    browser: harness.Page, status_server: StatusServer
) -> None:
    status_server.set_status(statusdocs.demo())
    browser.goto(status_server.url)
    browser.wait_for("window.fleetUi")
    rng = random.Random(20261126)
    cases = []
    for _ in range(600):
        labels = {k: rng.choice(VALUES[:-1]) for k in KEYS if rng.random() < 0.6}
        cases.append((random_text(rng), labels))
    got = browser.evaluate(
        f"""{json.dumps(cases)}.map(([text, labels]) => {{
          let parsed;
          try {{ parsed = window.fleetUi.parseSelector(text); }} catch (e) {{ return 'invalid'; }}
          return window.fleetUi.matches(parsed, labels);
        }})"""
    )
    expected = [python_verdict(text, labels) for text, labels in cases]
    disagreements = [(c, g, e) for c, g, e in zip(cases, got, expected, strict=True) if g != e]
    assert disagreements == []
    # The generator reaches every outcome.
    assert {"invalid", True, False} <= set(expected)
