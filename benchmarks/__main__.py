"""Run every benchmark: each `benchmarks/bench_*.py` module's `main()`, in name order.

Run: ``.venv/bin/python -m benchmarks`` (``make bench``). A module may be named on the command line to
run only those: ``python -m benchmarks bench_repository``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    here = Path(__file__).resolve().parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    wanted = [a.removesuffix(".py") for a in argv] or names
    for name in names:
        if name not in wanted:
            continue
        print(f"== benchmarks.{name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main()


if __name__ == "__main__":
    main(sys.argv[1:])
