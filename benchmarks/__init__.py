"""Benchmarks of fleet, one module per stage (`bench_*.py`, each with `main()`); run all with `python -m benchmarks`."""
