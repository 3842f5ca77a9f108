"""Benchmarks (never part of the test run): `python -m bench.run [--quick]`."""
