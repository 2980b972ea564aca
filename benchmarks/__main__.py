"""Run every benchmark: each `benchmarks/bench_*.py` module, in name order, each in its own process.

Run: ``.venv/bin/python -m benchmarks`` (``make bench``). Modules named on the command line run alone:
``python -m benchmarks bench_repository``; options (``--quick``) are passed on to each module. Each
module runs in a fresh interpreter, so memory measurements (RSS growth) of one are not skewed by what
an earlier one left in the process.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    options = [a for a in argv if a.startswith("-")]
    wanted = [a.removesuffix(".py") for a in argv if not a.startswith("-")] or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        if name not in wanted:
            continue
        print(f"== benchmarks.{name}", flush=True)
        code = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{name}", *options], cwd=here.parent
        ).returncode
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
