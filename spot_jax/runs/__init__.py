"""Runs: a run as a spec (spec.py), local execution and packing (execute.py), launch scripts
(launchers.py), the worker entry point (worker.py)."""
