"""Benchmarks of the execution kernel (see docs/benchmarks.md). Run with ``bench/run_all.sh``."""
