"""Benchmarks of the whole flow: ``make bench`` (see bench/README.md)."""
