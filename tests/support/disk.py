"""A really full disk for tests: a small tmpfs mounted on a test folder, and a filler file that takes
every free byte (the writes after it fail with ENOSPC, which SQLite reports as "database or disk is
full"). Mounting needs root (CAP_SYS_ADMIN), which the test machines have.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def small_filesystem(path: Path, *, size: str = "4m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True, timeout=30)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


def fill(folder: Path) -> Path:
    """Write a file into `folder` until the filesystem is full; returns it (delete it to free the space)."""
    filler = folder / "filler"
    block = b"\0" * 4096
    with filler.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(block)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
    for size in (512, 64, 1):  # the last partial blocks too
        try:
            with filler.open("ab", buffering=0) as f:
                while True:
                    f.write(b"\0" * size)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    return filler
