"""Benchmarks: `python run.py bench <name> ...`; results go to docs/benchmarks.md."""
