"""Fault injection for end-to-end tests of the real `fleet serve` process.

Python imports this module at start when its folder is on PYTHONPATH (as `sitecustomize`); tests put it
there for one child process only (`tests.support.serve.INJECT`). With ``FLEET_TEST_FAULT=render-bug``,
`fleet.core.render.render_all` raises an unexpected ZeroDivisionError whenever the revision holds a bundle named
``bug``: a stand-in for a bug in content processing, which the controller must survive.
"""

from __future__ import annotations

import os
from typing import Any

if os.environ.get("FLEET_TEST_FAULT") == "render-bug":
    from fleet.core import render

    _render_all = render.render_all

    def _buggy_render_all(repo: Any, *args: Any, **kwargs: Any) -> Any:
        if "bug" in repo.bundles:
            return 1 // 0
        return _render_all(repo, *args, **kwargs)

    render.render_all = _buggy_render_all
