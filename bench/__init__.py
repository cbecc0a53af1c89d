"""Benchmark command (python -m bench.run) and the comparison designs it measures."""
