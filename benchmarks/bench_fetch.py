"""Benchmark: the controller's first fetch of a local repository with a long history.

Run: ``.venv/bin/python -m benchmarks bench_fetch`` (20,000 commits) or ``... bench_fetch --quick`` (2,000).

The upstream is a local repository (a path, as ``fleet serve --repo /srv/fleet`` reads it) whose branch
``main`` has N commits, each changing one manifest of a small GitOps layout. Measured, each into an empty
state directory, CPU time of this process (the fetch runs in a worker thread) and wall time:

- ``Source.fetch()``: every branch and tag with its history, as `fleet serve` fetched before issue 13
  (libgit2's local transport packs the whole history);
- ``Source.fetch_tip(Follow(branch="main"))``: what the controller fetches now, the tip commit alone;
- ``fetch_tip`` again after one more commit upstream (the steady state of polling).

Writes ``benchmarks/results/fetch.json`` (``fetch-quick.json`` with ``--quick``). The history is built in
memory (a Python object-database backend) and written as one pack, so building
20,000 commits takes seconds rather than the minutes of 100,000 loose objects.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pygit2
import pygit2.enums

from fleet.clients import source

T = TypeVar("T")

RESULTS = Path(__file__).resolve().parent / "results"
QUICK = "--quick" in sys.argv
N_COMMITS = 2_000 if QUICK else 20_000
TREE = pygit2.enums.FileMode.TREE
BLOB = pygit2.enums.FileMode.BLOB


class _MemoryOdb(pygit2.OdbBackend):
    """Objects in a dict: enough for create_commit and the pack builder."""

    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[pygit2.Oid, tuple[int, bytes]] = {}

    def read_cb(self, oid: pygit2.Oid) -> tuple[int, bytes]:
        return self.objects[oid]

    def read_header_cb(self, oid: pygit2.Oid) -> tuple[int, int]:
        kind, data = self.objects[oid]
        return kind, len(data)

    def read_prefix_cb(self, oid: pygit2.Oid) -> Any:
        raise KeyError(oid)

    def exists_prefix_cb(self, oid: pygit2.Oid) -> Any:
        raise KeyError(oid)

    def write_cb(self, oid: pygit2.Oid, data: bytes, kind: int) -> None:
        self.objects[oid] = (kind, data)

    def exists_cb(self, oid: pygit2.Oid) -> bool:
        return oid in self.objects

    def refresh_cb(self) -> None:
        pass

    def __iter__(self) -> Iterator[pygit2.Oid]:
        return iter(self.objects)


def _tree(repo: pygit2.Repository, entries: dict[str, tuple[pygit2.Oid, int]]) -> pygit2.Oid:
    builder = repo.TreeBuilder()
    for name, (oid, mode) in entries.items():
        builder.insert(name, oid, mode)
    return builder.write()


def build(upstream: Path, n: int) -> str:
    """A bare repository at `upstream` whose ``main`` has `n` commits; the tip's id."""
    odb = pygit2.Odb()
    memory = _MemoryOdb()
    odb.add_backend(memory, 1)
    repo = pygit2.Repository()
    repo.set_odb(odb)
    sig = pygit2.Signature("Bench", "bench@example.com", 1_700_000_000, 0)
    cluster = repo.create_blob(b"apiVersion: fleet.dev/v1alpha1\nkind: Cluster\nmetadata: {name: eu-1}\n")
    bundle = repo.create_blob(
        b"apiVersion: fleet.dev/v1alpha1\nkind: Bundle\nmetadata: {name: web}\n"
        b"spec: {namespace: web, placement: {clusterSelector: {}}}\n"
    )
    clusters = _tree(repo, {"eu-1.yaml": (cluster, BLOB)})
    parents: list[pygit2.Oid] = []
    for i in range(n):
        manifest = repo.create_blob(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: web}}\ndata: {{build: '{i}'}}\n".encode()
        )
        web = _tree(repo, {"bundle.yaml": (bundle, BLOB), "config.yaml": (manifest, BLOB)})
        bundles = _tree(repo, {"web": (web, TREE)})
        root = _tree(repo, {"clusters": (clusters, TREE), "bundles": (bundles, TREE)})
        parents = [repo.create_commit(None, sig, sig, f"build {i}", root, parents)]
    out = pygit2.init_repository(str(upstream), bare=True, initial_head="main")
    packer = pygit2.PackBuilder(repo)
    for oid in memory.objects:
        packer.add(oid)
    packer.write(str(upstream / "objects" / "pack"))
    out.references.create("refs/heads/main", parents[0])
    return str(parents[0])


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(fn: Callable[..., Awaitable[T]], *args: Any) -> tuple[T, float, float]:
    cpu, wall = _cpu(), time.perf_counter()
    result = anyio.run(fn, *args)
    return result, _cpu() - cpu, time.perf_counter() - wall


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fleet-bench-fetch-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        tip = build(root / "upstream", N_COMMITS)
        print(
            f"upstream: local repository, {N_COMMITS} commits on main (built in {time.perf_counter() - start:.1f} s)"
        )

        numbers: dict[str, Any] = {"commits": N_COMMITS}
        full = source.Source(root / "upstream", state_dir=root / "state-full")
        _, cpu, wall = measure(full.fetch)
        numbers["full_fetch"] = {"cpu_s": round(cpu, 4), "wall_s": round(wall, 4)}
        assert anyio.run(full.resolve, "refs/heads/main") == tip
        print(
            f"Source.fetch() (every branch and tag, with history; before): cpu {cpu:.3f} s, wall {wall:.3f} s"
        )

        follow = source.Follow(branch="main")
        lean = source.Source(root / "upstream", state_dir=root / "state-tip")
        sha, cpu, wall = measure(lean.fetch_tip, follow)
        assert sha == tip
        numbers["fetch_tip"] = {"cpu_s": round(cpu, 4), "wall_s": round(wall, 4)}
        print(f"Source.fetch_tip(branch main) (the tip alone; now):      cpu {cpu:.3f} s, wall {wall:.3f} s")
        a, b = anyio.run(full.snapshot, tip), anyio.run(lean.snapshot, tip)
        assert a.files == b.files and a.revision == b.revision

        upstream = pygit2.Repository(str(root / "upstream"))
        head = upstream[upstream.references["refs/heads/main"].target]
        assert isinstance(head, pygit2.Commit)
        sig = pygit2.Signature("Bench", "bench@example.com", 1_700_100_000, 0)
        newer = str(upstream.create_commit("refs/heads/main", sig, sig, "one more", head.tree_id, [head.id]))
        sha, cpu, wall = measure(lean.fetch_tip, follow)
        assert sha == newer
        numbers["fetch_tip_next_commit"] = {"cpu_s": round(cpu, 4), "wall_s": round(wall, 4)}
        print(f"Source.fetch_tip after one more commit (steady state):  cpu {cpu:.3f} s, wall {wall:.3f} s")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("fetch-quick.json" if QUICK else "fetch.json")
    out.write_text(json.dumps(numbers, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
