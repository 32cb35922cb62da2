"""Benchmarks: scripts run from the checkout root as `python -m benchmarks.<name>`; each
compares side by side in one run and writes its section of benchmarks/RESULTS.md."""
