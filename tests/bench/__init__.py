"""Benchmarks: runnable modules (``python -m tests.bench.<name>``), never collected by pytest.

Each one measures against a baseline in the same run and prints the ratio; none asserts a time.
Servers and load generator are separate processes on loopback; figures are medians over rounds.
"""
