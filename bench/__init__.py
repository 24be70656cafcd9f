"""Benchmarks and long fault runs, each a script run from the repository root (see README)."""
